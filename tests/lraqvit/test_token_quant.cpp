// LRA-QViT's per-token activation quantizer and per-channel weights against slow scalar references on odd shapes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/lraqvit/token_quant.h"

using namespace lorq;
using namespace lorq::lraqvit;

namespace {

// One row, written from the definition in token_quant.h with plain loops (float32, as the header specifies).
std::vector<float> reference_row(const std::vector<float>& x, int bits, TokenQuantMode mode) {
  std::vector<float> out(x.size());
  if (mode == TokenQuantMode::Symmetric) {
    float amax = 0;
    for (float v : x) amax = std::fabs(v) > amax ? std::fabs(v) : amax;
    const float qmax = float((1 << (bits - 1)) - 1);
    const float d = amax == 0 ? 1.f : amax / qmax;
    for (size_t j = 0; j < x.size(); ++j) {
      float c = std::nearbyint(x[j] / d);
      if (c > qmax) c = qmax;
      if (c < -qmax) c = -qmax;
      out[j] = c * d;
    }
    return out;
  }
  float lo = 0, hi = 0;
  for (float v : x) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const float qmax = float((1 << bits) - 1);
  const float d = hi - lo == 0 ? 1.f : (hi - lo) / qmax;
  const float z = std::nearbyint(-lo / d);
  for (size_t j = 0; j < x.size(); ++j) {
    float c = std::nearbyint(x[j] / d) + z;
    if (c > qmax) c = qmax;
    if (c < 0) c = 0;
    out[j] = (c - z) * d;
  }
  return out;
}

at::Tensor reference(const at::Tensor& x, int bits, TokenQuantMode mode) {
  const at::Tensor xc = x.contiguous();
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  at::Tensor out = at::empty_like(xc);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> row(xc.data_ptr<float>() + r * n, xc.data_ptr<float>() + (r + 1) * n);
    const std::vector<float> q = reference_row(row, bits, mode);
    std::copy(q.begin(), q.end(), out.data_ptr<float>() + r * n);
  }
  return out;
}

// Rows of very different magnitudes (token outliers), a few channel outliers, an all-zero row and a negative-only row.
at::Tensor outlier_tokens(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  at::Tensor x = at::randn(shape, g);
  at::Tensor flat = x.view({-1, shape.back()});
  const int64_t rows = flat.size(0);
  flat.mul_(at::exp(at::randn({rows, 1}, g) * 2));
  flat.select(1, shape.back() / 2).mul_(30);
  if (rows > 2) {
    flat[0].zero_();
    flat[1].abs_().neg_();
  }
  return x;
}

}  // namespace

TEST(TokenQuant, KernelMatchesScalarReferenceOnOddShapes) {
  const std::vector<std::vector<int64_t>> shapes = {{1, 1}, {3, 7}, {2, 5, 13}, {5, 197, 33}, {1, 3, 4, 129}};
  uint64_t seed = 1;
  for (const auto& shape : shapes) {
    for (int bits : {4, 6, 8}) {
      for (TokenQuantMode mode : {TokenQuantMode::Symmetric, TokenQuantMode::Asymmetric}) {
        const at::Tensor x = outlier_tokens(shape, seed++);
        const at::Tensor got = fake_quantize_per_token(x, {bits, mode});
        ASSERT_EQ(got.sizes(), x.sizes());
        EXPECT_TRUE(at::equal(got, reference(x, bits, mode)))
            << "shape " << x.sizes() << " bits " << bits << " " << to_string(mode);
      }
    }
  }
}

TEST(TokenQuant, OneScalePerRowAndTheErrorShrinksWithBits) {
  const at::Tensor x = outlier_tokens({4, 31, 45}, 7);
  double previous = 1e30;
  for (int bits : {4, 6, 8}) {
    const at::Tensor q = fake_quantize_per_token(x, {bits, TokenQuantMode::Symmetric});
    // Each row takes at most 2^b − 1 distinct values on a grid of its own step.
    const at::Tensor rows = q.view({-1, 45});
    for (int64_t r = 0; r < rows.size(0); ++r) EXPECT_LE(std::get<0>(at::_unique(rows[r])).numel(), (1 << bits) - 1);
    // Half a step per entry at most, the step being the row's max |x| / (2^(b−1) − 1).
    const at::Tensor step = x.view({-1, 45}).abs().amax(1, true) / float((1 << (bits - 1)) - 1);
    EXPECT_TRUE(((q - x).view({-1, 45}).abs() <= step * 0.5001 + 1e-30).all().item<bool>());
    const double err = (q - x).pow(2).sum().item<double>();
    EXPECT_LT(err, previous);
    previous = err;
  }
  // The zero row stays zero; the row of negatives keeps its sign.
  EXPECT_EQ(fake_quantize_per_token(x, {8}).view({-1, 45})[0].abs().max().item<float>(), 0.f);
}

TEST(TokenQuant, StraightThroughGradientIsIdentity) {
  at::Tensor x = outlier_tokens({3, 9, 11}, 3).requires_grad_(true);
  const at::Tensor y = fake_quantize_per_token_ste(x, {6, TokenQuantMode::Asymmetric});
  EXPECT_TRUE(at::equal(y.detach(), fake_quantize_per_token(x.detach(), {6, TokenQuantMode::Asymmetric})));
  (y * 3).sum().backward();
  EXPECT_TRUE(at::allclose(x.grad(), at::full_like(x, 3.0)));
}

TEST(TokenQuant, QuantizedLinearMatchesIntegerArithmetic) {
  // y_ij = Σ_k Δ_i·c_ik · Δ_j·(k_jk − z_j) + b_j in double from the integer codes, against the float kernel.
  at::Generator g = at::detail::createCPUGenerator(11);
  const int64_t rows = 37, n = 53, m = 19;
  const at::Tensor x = outlier_tokens({rows, n}, 12);
  const at::Tensor w = at::randn({m, n}, g) * 0.1;
  const at::Tensor b = at::randn({m}, g);
  for (int bits : {4, 8}) {
    const RowQuantParams wp = per_channel_weight_params(w, bits);
    const at::Tensor codes = quantize_rows_to_codes(w, wp);
    const at::Tensor y = token_quantized_linear(x, dequantize_codes(codes, wp), b, {8});
    const at::Tensor xq = reference(x, 8, TokenQuantMode::Symmetric);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        double acc = b[j].item<double>();
        for (int64_t k = 0; k < n; ++k)
          acc += double(xq[i][k].item<float>()) * double(wp.scale[j].item<float>()) *
                 (double(codes[j][k].item<uint8_t>()) - double(wp.zero_point[j].item<float>()));
        ASSERT_NEAR(y[i][j].item<double>(), acc, 1e-4 * (1 + std::fabs(acc))) << i << "," << j;
      }
    }
  }
}

TEST(TokenQuant, PerChannelWeightsOneGridPerRow) {
  at::Generator g = at::detail::createCPUGenerator(5);
  const at::Tensor w = at::randn({23, 41}, g) * at::exp(at::randn({23, 1}, g));
  const at::Tensor q = fake_quantize_per_channel(w, 4);
  for (int64_t r = 0; r < 23; ++r) {
    const double step = (w[r].max().item<double>() - w[r].min().item<double>()) / 15;
    EXPECT_LE((q[r] - w[r]).abs().max().item<double>(), step * 0.5 + 1e-6);
    EXPECT_LE(std::get<0>(at::_unique(q[r])).numel(), 16);
  }
}

TEST(TokenQuant, BadSettingsAreClearErrors) {
  const at::Tensor x = at::randn({2, 3});
  EXPECT_THROW(fake_quantize_per_token(x, {1}), Error);
  EXPECT_THROW(fake_quantize_per_token(x, {9}), Error);
  EXPECT_THROW(fake_quantize_per_token(x.to(at::kDouble), {8}), Error);
  EXPECT_THROW(token_quant_mode_from_string("per-tensor"), Error);
}
