#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/demo/detection_loss.h"

namespace {

// Slow references, one number at a time, in double.
std::vector<double> softmax(const std::vector<double>& z) {
  const double m = *std::max_element(z.begin(), z.end());
  std::vector<double> p(z.size());
  double s = 0;
  for (size_t k = 0; k < z.size(); ++k) s += p[k] = std::exp(z[k] - m);
  for (double& v : p) v /= s;
  return p;
}

double giou(const double* a, const double* b) {  // cx, cy, w, h
  const double ax0 = a[0] - a[2] / 2, ay0 = a[1] - a[3] / 2, ax1 = a[0] + a[2] / 2, ay1 = a[1] + a[3] / 2;
  const double bx0 = b[0] - b[2] / 2, by0 = b[1] - b[3] / 2, bx1 = b[0] + b[2] / 2, by1 = b[1] + b[3] / 2;
  const double iw = std::max(0.0, std::min(ax1, bx1) - std::max(ax0, bx0));
  const double ih = std::max(0.0, std::min(ay1, by1) - std::max(ay0, by0));
  const double inter = iw * ih, uni = a[2] * a[3] + b[2] * b[3] - inter;
  const double enc = (std::max(ax1, bx1) - std::min(ax0, bx0)) * (std::max(ay1, by1) - std::min(ay0, by0));
  return inter / uni - (enc - uni) / enc;
}

struct Reference {
  double ce = 0, l1 = 0, giou = 0;
  std::vector<std::vector<int64_t>> matches;
};

// Brute-force matching (every injective map of targets to queries) and the loss terms by hand.
Reference reference_loss(const at::Tensor& logits, const at::Tensor& boxes,
                         const std::vector<lorq::DetectionTarget>& targets, const lorq::DetectionLossWeights& w) {
  const int64_t batch = logits.size(0), queries = logits.size(1), classes = logits.size(2);
  Reference r;
  double ce_num = 0, ce_den = 0;
  int64_t num_boxes = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t n = targets[i].labels.size(0);
    num_boxes += n;
    auto pred = [&](int64_t q) {
      static thread_local double b[4];
      for (int k = 0; k < 4; ++k) b[k] = boxes[i][q][k].item<double>();
      return b;
    };
    auto prob = [&](int64_t q) {
      std::vector<double> z(static_cast<size_t>(classes));
      for (int64_t k = 0; k < classes; ++k) z[k] = logits[i][q][k].item<double>();
      return softmax(z);
    };
    auto pair_cost = [&](int64_t q, int64_t t) {
      double tb[4];
      for (int k = 0; k < 4; ++k) tb[k] = targets[i].boxes[t][k].item<double>();
      const double* pb = pred(q);
      double l1 = 0;
      for (int k = 0; k < 4; ++k) l1 += std::abs(pb[k] - tb[k]);
      double anchor = 0;  // L1 distance of the target's centre to the query's anchor
      if (w.anchor_cost > 0)
        for (int k = 0; k < 2; ++k) anchor += std::abs(w.anchors[q][k].item<double>() - tb[k]);
      return w.bbox_cost * l1 - w.class_cost * prob(q)[targets[i].labels[t].item<int64_t>()] -
             w.giou_cost * giou(pb, tb) + w.anchor_cost * anchor;
    };
    std::vector<int64_t> perm(static_cast<size_t>(queries));
    std::iota(perm.begin(), perm.end(), 0);
    double best = std::numeric_limits<double>::infinity();
    std::vector<int64_t> best_match;
    do {  // target t -> query perm[t]
      double c = 0;
      for (int64_t t = 0; t < n; ++t) c += pair_cost(perm[t], t);
      if (c < best - 1e-12) {
        best = c;
        best_match.assign(static_cast<size_t>(queries), -1);
        for (int64_t t = 0; t < n; ++t) best_match[perm[t]] = t;
      }
    } while (std::next_permutation(perm.begin(), perm.end()));
    r.matches.push_back(best_match);
    for (int64_t q = 0; q < queries; ++q) {
      const int64_t t = best_match[q];
      const int64_t cls = t < 0 ? classes - 1 : targets[i].labels[t].item<int64_t>();
      const double weight = t < 0 ? w.eos_coef : 1.0;
      ce_num += -weight * std::log(prob(q)[cls]);
      ce_den += weight;
      if (t < 0) continue;
      double tb[4];
      for (int k = 0; k < 4; ++k) tb[k] = targets[i].boxes[t][k].item<double>();
      const double* pb = pred(q);
      for (int k = 0; k < 4; ++k) r.l1 += std::abs(pb[k] - tb[k]);
      r.giou += 1 - giou(pb, tb);
    }
  }
  r.ce = ce_num / ce_den;
  r.l1 /= std::max<int64_t>(1, num_boxes);
  r.giou /= std::max<int64_t>(1, num_boxes);
  return r;
}

lorq::DetectionTarget random_target(int64_t n, int64_t classes) {
  lorq::DetectionTarget t;
  t.labels = at::randint(0, classes, {n}, at::kLong);
  t.boxes = at::cat({at::rand({n, 2}, at::kDouble) * 0.6 + 0.2, at::rand({n, 2}, at::kDouble) * 0.3 + 0.05}, 1);
  return t;
}

TEST(DetectionLoss, MatchesBruteForceReference) {
  at::manual_seed(5);
  const lorq::DetectionLossWeights w;
  for (auto [queries, classes] : {std::pair<int64_t, int64_t>{5, 3}, {6, 7}, {3, 2}}) {
    const int64_t batch = 3;
    const at::Tensor logits = at::randn({batch, queries, classes + 1}, at::kDouble) * 2;
    const at::Tensor boxes = at::cat({at::rand({batch, queries, 2}, at::kDouble) * 0.6 + 0.2,
                                      at::rand({batch, queries, 2}, at::kDouble) * 0.3 + 0.05},
                                     2);
    std::vector<lorq::DetectionTarget> targets;
    for (int64_t i = 0; i < batch; ++i) targets.push_back(random_target(std::min<int64_t>(i + 1, queries), classes));
    targets[0] = random_target(0, classes);  // an image without objects

    const lorq::DetectionLoss got = lorq::detection_loss(logits, boxes, targets, w);
    const Reference want = reference_loss(logits, boxes, targets, w);
    EXPECT_EQ(got.matches, want.matches);
    EXPECT_NEAR(got.ce.item<double>(), want.ce, 1e-10);
    EXPECT_NEAR(got.l1.item<double>(), want.l1, 1e-10);
    EXPECT_NEAR(got.giou.item<double>(), want.giou, 1e-10);
    EXPECT_NEAR(got.total.item<double>(), want.ce + 5 * want.l1 + 2 * want.giou, 1e-9);
  }
}

TEST(DetectionLoss, AnchorCostMatchesBruteForceReference) {
  at::manual_seed(7);
  for (double anchor_cost : {0.5, 5.0, 50.0}) {
    lorq::DetectionLossWeights w;
    w.anchor_cost = anchor_cost;
    const int64_t batch = 3, queries = 6, classes = 4;
    w.anchors = at::rand({queries, 2});
    const at::Tensor logits = at::randn({batch, queries, classes + 1}, at::kDouble) * 2;
    const at::Tensor boxes = at::cat({at::rand({batch, queries, 2}, at::kDouble) * 0.6 + 0.2,
                                      at::rand({batch, queries, 2}, at::kDouble) * 0.3 + 0.05},
                                     2);
    std::vector<lorq::DetectionTarget> targets;
    for (int64_t i = 0; i < batch; ++i) targets.push_back(random_target(i + 2, classes));
    const lorq::DetectionLoss got = lorq::detection_loss(logits, boxes, targets, w);
    const Reference want = reference_loss(logits, boxes, targets, w);
    EXPECT_EQ(got.matches, want.matches) << "anchor cost " << anchor_cost;
    EXPECT_NEAR(got.total.item<double>(), want.ce + 5 * want.l1 + 2 * want.giou, 1e-9);
  }
}

TEST(DetectionLoss, LargeAnchorCostGivesEachObjectTheQueryOfItsCell) {
  // Two objects, four queries on a 2x2 grid of cells; the predictions all sit on the first object, so the plain
  // matcher gives both objects to whichever queries predict best, but with the prior each goes to its own cell.
  lorq::DetectionLossWeights w;
  w.anchor_cost = 100;
  w.anchors = at::tensor({0.25, 0.25, 0.75, 0.25, 0.25, 0.75, 0.75, 0.75}, at::kFloat).view({4, 2});
  lorq::DetectionTarget t;
  t.labels = at::tensor({0, 1}, at::kLong);
  t.boxes = at::tensor({0.8, 0.7, 0.1, 0.1, 0.2, 0.3, 0.1, 0.1}, at::kDouble).view({2, 4});
  const at::Tensor boxes = at::tensor({0.8, 0.7, 0.1, 0.1}, at::kDouble).repeat({1, 4, 1});
  const at::Tensor logits = at::zeros({1, 4, 3}, at::kDouble);
  EXPECT_EQ(lorq::detection_loss(logits, boxes, {t}, w).matches[0], (std::vector<int64_t>{1, -1, -1, 0}));
  w.anchor_cost = 1;
  w.anchors = at::zeros({3, 2});  // not one anchor per query
  EXPECT_THROW(lorq::detection_loss(logits, boxes, {t}, w), lorq::Error);
}

TEST(DetectionLoss, GradientsReachLogitsAndBoxes) {
  at::manual_seed(6);
  at::Tensor logits = at::randn({2, 4, 4}).requires_grad_(true);
  at::Tensor raw = at::randn({2, 4, 4}).requires_grad_(true);
  const at::Tensor boxes = raw.sigmoid();
  const std::vector<lorq::DetectionTarget> targets = {random_target(2, 3), random_target(1, 3)};
  std::vector<lorq::DetectionTarget> float_targets = targets;
  for (auto& t : float_targets) t.boxes = t.boxes.to(at::kFloat);
  lorq::detection_loss(logits, boxes, float_targets).total.backward();
  EXPECT_GT(logits.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(raw.grad().abs().sum().item<double>(), 0);
  EXPECT_TRUE(at::isfinite(raw.grad()).all().item<bool>());
}

TEST(DetectionLoss, PerfectPredictionHasNoBoxLoss) {
  lorq::DetectionTarget t;
  t.labels = at::tensor({1, 0}, at::kLong);
  t.boxes = at::tensor({0.3, 0.3, 0.2, 0.2, 0.7, 0.6, 0.1, 0.3}, at::kDouble).view({2, 4});
  at::Tensor boxes =
      at::tensor({0.5, 0.5, 0.9, 0.9, 0.7, 0.6, 0.1, 0.3, 0.3, 0.3, 0.2, 0.2}, at::kDouble).view({1, 3, 4});
  at::Tensor logits = at::zeros({1, 3, 3}, at::kDouble);
  logits[0][0][2] = 10;  // query 0: "no object"
  logits[0][1][0] = 10;  // query 1: class 0, on target 1
  logits[0][2][1] = 10;  // query 2: class 1, on target 0
  const lorq::DetectionLoss r = lorq::detection_loss(logits, boxes, {t});
  EXPECT_EQ(r.matches[0], (std::vector<int64_t>{-1, 1, 0}));
  EXPECT_NEAR(r.l1.item<double>(), 0, 1e-12);
  EXPECT_NEAR(r.giou.item<double>(), 0, 1e-12);
  EXPECT_LT(r.ce.item<double>(), 1e-3);
}

TEST(DetectionLoss, RejectsBadInput) {
  const at::Tensor logits = at::zeros({1, 3, 3}), boxes = at::zeros({1, 3, 4});
  lorq::DetectionTarget t;
  t.labels = at::tensor({2}, at::kLong);  // 2 is "no object" here: not a valid target class
  t.boxes = at::zeros({1, 4});
  EXPECT_THROW(lorq::detection_loss(logits, boxes, {t}), lorq::Error);
  EXPECT_THROW(lorq::detection_loss(logits, boxes, {}), lorq::Error);
  EXPECT_THROW(lorq::detection_loss(logits, at::zeros({1, 3, 5}), {t}), lorq::Error);
}

}  // namespace
