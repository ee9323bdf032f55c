// Output fidelity against a loop over images and classes in plain double arithmetic, on random shapes (odd sizes
// too), and its hand-checkable cases.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/tasks/output_fidelity.h"

using namespace lorq;

namespace {

OutputFidelity reference(const at::Tensor& r, const at::Tensor& y) {
  const int64_t n = r.size(0), c = r.size(1);
  const at::Tensor rd = r.to(at::kDouble).contiguous(), yd = y.to(at::kDouble).contiguous();
  const double* a = rd.data_ptr<double>();
  const double* b = yd.data_ptr<double>();
  OutputFidelity f;
  f.images = n;
  double noise = 0, signal = 0, kl = 0;
  int64_t agree = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double* ri = a + i * c;
    const double* yi = b + i * c;
    int64_t ar = 0, ay = 0;
    double mr = ri[0], my = yi[0];
    for (int64_t j = 0; j < c; ++j) {
      noise += (yi[j] - ri[j]) * (yi[j] - ri[j]);
      signal += ri[j] * ri[j];
      if (ri[j] > mr) mr = ri[j], ar = j;
      if (yi[j] > my) my = yi[j], ay = j;
    }
    agree += ar == ay;
    double zr = 0, zy = 0;
    for (int64_t j = 0; j < c; ++j) zr += std::exp(ri[j] - mr), zy += std::exp(yi[j] - my);
    for (int64_t j = 0; j < c; ++j) {
      const double p = std::exp(ri[j] - mr) / zr, q = std::exp(yi[j] - my) / zy;
      kl += p * (std::log(p) - std::log(q));
    }
  }
  f.agreement_pct = 100.0 * agree / n;
  f.output_nsr = noise / signal;
  f.kl = kl / n;
  return f;
}

}  // namespace

TEST(OutputFidelity, MatchesAPerImageLoopOnRandomShapes) {
  at::manual_seed(7);
  for (auto [n, c] : std::vector<std::pair<int64_t, int64_t>>{{1, 2}, {3, 7}, {17, 5}, {64, 1000}, {33, 101}}) {
    const at::Tensor r = at::randn({n, c}) * 3;
    // Some rows keep their top class, others do not: the noise is of the logits' own size.
    const at::Tensor y = r + at::randn({n, c}) * 1.5;
    const OutputFidelity got = output_fidelity(r, y), want = reference(r, y);
    EXPECT_EQ(got.images, n);
    EXPECT_DOUBLE_EQ(got.agreement_pct, want.agreement_pct) << n << "x" << c;
    EXPECT_NEAR(got.output_nsr, want.output_nsr, 1e-12 * want.output_nsr) << n << "x" << c;
    EXPECT_NEAR(got.kl, want.kl, 1e-9 * std::max(1.0, want.kl)) << n << "x" << c;
  }
}

TEST(OutputFidelity, HandCheckedCases) {
  const at::Tensor r = at::tensor({2.0f, 0.0f, 0.0f, 0.0f, 1.0f, 0.0f}).reshape({2, 3});
  // Identical outputs: full agreement, no error.
  OutputFidelity same = output_fidelity(r, r.clone());
  EXPECT_EQ(same.agreement_pct, 100.0);
  EXPECT_EQ(same.output_nsr, 0.0);
  EXPECT_NEAR(same.kl, 0.0, 1e-15);
  // The second image's top class moves from 1 to 2; the noise is 2·1² against a signal of 2² + 1².
  const at::Tensor y = at::tensor({2.0f, 0.0f, 0.0f, 0.0f, 0.0f, 1.0f}).reshape({2, 3});
  const OutputFidelity f = output_fidelity(r, y);
  EXPECT_EQ(f.agreement_pct, 50.0);
  EXPECT_DOUBLE_EQ(f.output_nsr, 2.0 / 5.0);
  // A logit shift common to every class changes no softmax: KL 0, though the NSR is not.
  const OutputFidelity shifted = output_fidelity(r, r + 3.0);
  EXPECT_NEAR(shifted.kl, 0.0, 1e-12);
  EXPECT_EQ(shifted.agreement_pct, 100.0);
  EXPECT_GT(shifted.output_nsr, 0.0);
}

TEST(OutputFidelity, RejectsMismatchedShapes) {
  EXPECT_THROW(output_fidelity(at::zeros({4, 10}), at::zeros({4, 9})), Error);
  EXPECT_THROW(output_fidelity(at::zeros({4, 10}), at::zeros({5, 10})), Error);
  EXPECT_THROW(output_fidelity(at::zeros({40}), at::zeros({40})), Error);
  EXPECT_THROW(output_fidelity(at::zeros({0, 10}), at::zeros({0, 10})), Error);
}
