// parallel_linear / parallel_matmul against a slow, obviously correct reference: explicit loops in float64 over
// random shapes, odd sizes included, batched and not, with and without a bias.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "lorq/common/parallel_ops.h"

using namespace lorq;

namespace {

// y[r, o] = Σ_i x[r, i] · w[o, i] + b[o], one multiply-add at a time.
at::Tensor reference_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const at::Tensor x2 = x.reshape({-1, x.size(-1)}).to(at::kDouble).contiguous();
  const at::Tensor wd = w.to(at::kDouble).contiguous();
  const int64_t R = x2.size(0), I = x2.size(1), O = wd.size(0);
  at::Tensor y = at::zeros({R, O}, at::kDouble);
  auto xa = x2.accessor<double, 2>();
  auto wa = wd.accessor<double, 2>();
  auto ya = y.accessor<double, 2>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double s = b.defined() ? b[o].item<double>() : 0.0;
      for (int64_t i = 0; i < I; ++i) s += xa[r][i] * wa[o][i];
      ya[r][o] = s;
    }
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = O;
  return y.reshape(shape);
}

// c[..., i, j] = Σ_k a[..., i, k] · b[..., k, j] over the flattened leading (batch) dimensions.
at::Tensor reference_matmul(const at::Tensor& a, const at::Tensor& b) {
  const int64_t M = a.size(-2), K = a.size(-1), N = b.size(-1);
  const at::Tensor a3 = a.reshape({-1, M, K}).to(at::kDouble).contiguous();
  const at::Tensor b3 = b.reshape({-1, K, N}).to(at::kDouble).contiguous();
  at::Tensor c = at::zeros({a3.size(0), M, N}, at::kDouble);
  auto A = a3.accessor<double, 3>();
  auto B = b3.accessor<double, 3>();
  auto C = c.accessor<double, 3>();
  for (int64_t n = 0; n < a3.size(0); ++n)
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) s += A[n][i][k] * B[n][k][j];
        C[n][i][j] = s;
      }
  std::vector<int64_t> shape = a.sizes().vec();
  shape.back() = N;
  return c.reshape(shape);
}

double rel_err(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(at::kDouble) - want).abs().max().item<double>() / (want.abs().max().item<double>() + 1e-30);
}

}  // namespace

TEST(ParallelOps, LinearMatchesTheReferenceOnOddShapes) {
  at::manual_seed(1);
  const std::vector<std::vector<int64_t>> inputs = {{1, 1}, {7, 13}, {3, 5, 17}, {2, 33, 31}, {5, 1, 64}, {129, 3}};
  const std::vector<int64_t> outs = {1, 9, 23, 64};
  for (const auto& shape : inputs)
    for (int64_t out : outs)
      for (bool bias : {false, true}) {
        const at::Tensor x = at::randn(shape);
        const at::Tensor w = at::randn({out, shape.back()});
        const at::Tensor b = bias ? at::randn({out}) : at::Tensor();
        const at::Tensor got = parallel_linear(x, w, b);
        const at::Tensor want = reference_linear(x, w, b);
        ASSERT_EQ(got.sizes(), want.sizes());
        EXPECT_LT(rel_err(got, want), 1e-5) << "x " << x.sizes() << " out " << out << " bias " << bias;
      }
}

TEST(ParallelOps, LinearAcceptsNonContiguousInputs) {
  at::manual_seed(2);
  const at::Tensor x = at::randn({19, 2, 11}).transpose(0, 1);  // [2, 19, 11], not contiguous
  const at::Tensor w = at::randn({7, 11});
  EXPECT_LT(rel_err(parallel_linear(x, w, at::Tensor()), reference_linear(x, w, at::Tensor())), 1e-5);
}

TEST(ParallelOps, MatmulMatchesTheReferenceOnOddShapes) {
  at::manual_seed(3);
  struct Case {
    std::vector<int64_t> batch;
    int64_t m, k, n;
  };
  for (const Case& c : {Case{{}, 1, 1, 1}, Case{{}, 7, 5, 3}, Case{{3}, 17, 9, 17}, Case{{2, 3}, 13, 32, 13},
                        Case{{1, 5}, 31, 7, 1}, Case{{4}, 65, 33, 65}}) {
    std::vector<int64_t> sa = c.batch, sb = c.batch;
    sa.insert(sa.end(), {c.m, c.k});
    sb.insert(sb.end(), {c.k, c.n});
    const at::Tensor a = at::randn(sa), b = at::randn(sb);
    const at::Tensor got = parallel_matmul(a, b);
    const at::Tensor want = reference_matmul(a, b);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LT(rel_err(got, want), 1e-5) << "a " << a.sizes() << " b " << b.sizes();
  }
}
