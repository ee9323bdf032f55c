#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <random>
#include <vector>

#include "lorq/common/box_ops.h"
#include "lorq/common/error.h"

namespace {

using Box = std::array<double, 4>;  // x0, y0, x1, y1

// The textbook definition, one pair at a time.
double giou_reference(const Box& a, const Box& b) {
  auto area = [](const Box& r) { return std::max(0.0, r[2] - r[0]) * std::max(0.0, r[3] - r[1]); };
  const double iw = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const double ih = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  const double inter = iw * ih, uni = area(a) + area(b) - inter;
  const double cw = std::max(a[2], b[2]) - std::min(a[0], b[0]), ch = std::max(a[3], b[3]) - std::min(a[1], b[1]);
  const double enclosing = cw * ch;
  return inter / uni - (enclosing - uni) / enclosing;
}

double iou_reference(const Box& a, const Box& b) {
  auto area = [](const Box& r) { return std::max(0.0, r[2] - r[0]) * std::max(0.0, r[3] - r[1]); };
  const double iw = std::max(0.0, std::min(a[2], b[2]) - std::max(a[0], b[0]));
  const double ih = std::max(0.0, std::min(a[3], b[3]) - std::max(a[1], b[1]));
  return iw * ih / (area(a) + area(b) - iw * ih);
}

std::vector<Box> random_boxes(std::mt19937& gen, int n) {
  std::uniform_real_distribution<double> pos(0, 1), size(0.01, 0.6);
  std::vector<Box> boxes;
  for (int i = 0; i < n; ++i) {
    const double x = pos(gen), y = pos(gen);
    boxes.push_back({x, y, x + size(gen), y + size(gen)});
  }
  return boxes;
}

at::Tensor to_tensor(const std::vector<Box>& boxes) {
  at::Tensor t = at::empty({static_cast<int64_t>(boxes.size()), 4}, at::kDouble);
  for (size_t i = 0; i < boxes.size(); ++i)
    for (int k = 0; k < 4; ++k) t[static_cast<int64_t>(i)][k] = boxes[i][k];
  return t;
}

TEST(BoxOps, GiouAndIouMatchReference) {
  std::mt19937 gen(3);
  for (auto [n, m] : {std::pair{1, 1}, std::pair{5, 3}, std::pair{7, 11}}) {
    std::vector<Box> a = random_boxes(gen, n), b = random_boxes(gen, m);
    a[0] = b[0];                                                             // identical: GIoU 1
    if (n > 1) a[1] = {b[0][0] + 5, b[0][1] + 5, b[0][2] + 5, b[0][3] + 5};  // disjoint and far: GIoU near -1
    if (n > 2 && m > 1) a[2] = {b[1][0] + 0.01, b[1][1] + 0.01, b[1][2] - 0.005, b[1][3] - 0.005};  // inside
    const at::Tensor g = lorq::generalized_box_iou(to_tensor(a), to_tensor(b));
    const at::Tensor iou = lorq::box_iou(to_tensor(a), to_tensor(b));
    ASSERT_EQ(g.sizes(), (at::IntArrayRef{n, m}));
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < m; ++j) {
        EXPECT_NEAR(g[i][j].item<double>(), giou_reference(a[i], b[j]), 1e-12) << i << "," << j;
        EXPECT_NEAR(iou[i][j].item<double>(), iou_reference(a[i], b[j]), 1e-12) << i << "," << j;
      }
    }
    EXPECT_NEAR(g[0][0].item<double>(), 1.0, 1e-12);
  }
}

TEST(BoxOps, CxcywhConversionsRoundTrip) {
  const at::Tensor c = at::tensor({0.5, 0.25, 0.2, 0.1, 0.3, 0.7, 0.05, 0.4}, at::kDouble).view({2, 4});
  const at::Tensor xyxy = lorq::box_cxcywh_to_xyxy(c);
  EXPECT_TRUE(at::allclose(xyxy[0], at::tensor({0.4, 0.2, 0.6, 0.3}, at::kDouble)));
  EXPECT_TRUE(at::allclose(lorq::box_xyxy_to_cxcywh(xyxy), c));
  // The cxcywh GIoU is the corner GIoU of the converted boxes.
  const at::Tensor d = at::tensor({0.45, 0.3, 0.3, 0.2}, at::kDouble).view({1, 4});
  EXPECT_TRUE(at::allclose(lorq::generalized_box_iou_cxcywh(c, d),
                           lorq::generalized_box_iou(xyxy, lorq::box_cxcywh_to_xyxy(d))));
}

TEST(BoxOps, GradientMatchesFiniteDifferences) {
  at::manual_seed(9);
  const at::Tensor a = at::rand({4, 4}, at::kDouble) * 0.3 + at::tensor({0.2, 0.2, 0.1, 0.1}, at::kDouble);
  const at::Tensor b = at::rand({3, 4}, at::kDouble) * 0.3 + at::tensor({0.2, 0.2, 0.1, 0.1}, at::kDouble);
  at::Tensor x = a.clone().requires_grad_(true);
  const at::Tensor weights = at::rand({4, 3}, at::kDouble);
  (lorq::generalized_box_iou_cxcywh(x, b) * weights).sum().backward();
  const at::Tensor grad = x.grad();
  const double h = 1e-6;
  for (int64_t i = 0; i < 4; ++i) {
    for (int64_t k = 0; k < 4; ++k) {
      at::Tensor up = a.clone(), down = a.clone();
      up[i][k] += h;
      down[i][k] -= h;
      const double numeric = ((lorq::generalized_box_iou_cxcywh(up, b) * weights).sum().item<double>() -
                              (lorq::generalized_box_iou_cxcywh(down, b) * weights).sum().item<double>()) /
                             (2 * h);
      EXPECT_NEAR(grad[i][k].item<double>(), numeric, 1e-6) << i << "," << k;
    }
  }
}

TEST(BoxOps, DegenerateBoxesStayFinite) {
  const at::Tensor zero = at::zeros({1, 4}, at::kFloat).requires_grad_(true);
  const at::Tensor g = lorq::generalized_box_iou(zero, zero);
  EXPECT_TRUE(at::isfinite(g).all().item<bool>());
  g.sum().backward();
  EXPECT_TRUE(at::isfinite(zero.grad()).all().item<bool>());
  EXPECT_THROW(lorq::generalized_box_iou(at::zeros({3}), zero), lorq::Error);
}

}  // namespace
