#include "lorq/lraqvit/token_quant.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq::lraqvit {

std::string to_string(TokenQuantMode mode) { return mode == TokenQuantMode::Symmetric ? "sym" : "asym"; }

TokenQuantMode token_quant_mode_from_string(const std::string& s) {
  if (s == "sym") return TokenQuantMode::Symmetric;
  if (s == "asym") return TokenQuantMode::Asymmetric;
  throw Error("per-token activation quantization: unknown mode '" + s + "' (expected sym or asym)");
}

namespace {

void check_quantizer(const TokenQuantizer& q) {
  if (q.bits < 2 || q.bits > 8)
    throw Error("per-token activation quantization: bits must be in 2..8, got " + std::to_string(q.bits));
}

// One row, in place of `out`. Float32 throughout so the test's scalar reference can match it bit for bit.
void quantize_row(const float* x, float* out, int64_t n, const TokenQuantizer& q) {
  if (q.mode == TokenQuantMode::Symmetric) {
    float amax = 0.f;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float qmax = static_cast<float>((1 << (q.bits - 1)) - 1);
    const float delta = amax > 0.f ? amax / qmax : 1.f;
    for (int64_t j = 0; j < n; ++j) {
      const float c = std::min(qmax, std::max(-qmax, std::nearbyint(x[j] / delta)));
      out[j] = c * delta;
    }
    return;
  }
  float lo = 0.f, hi = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  const float qmax = static_cast<float>((1 << q.bits) - 1);
  const float width = hi - lo;
  const float delta = width > 0.f ? width / qmax : 1.f;
  const float z = std::nearbyint(-lo / delta);
  for (int64_t j = 0; j < n; ++j) {
    const float c = std::min(qmax, std::max(0.f, std::nearbyint(x[j] / delta) + z));
    out[j] = (c - z) * delta;
  }
}

}  // namespace

at::Tensor fake_quantize_per_token(const at::Tensor& x, const TokenQuantizer& q) {
  check_quantizer(q);
  if (x.scalar_type() != at::kFloat) throw Error("per-token activation quantization: expected a float32 tensor");
  if (x.dim() == 0 || x.numel() == 0) return x.clone();
  const at::Tensor xc = x.detach().contiguous();
  at::Tensor out = at::empty_like(xc);
  const int64_t n = xc.size(-1), rows = xc.numel() / n;
  const float* src = xc.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) quantize_row(src + r * n, dst + r * n, n, q);
  });
  return out;
}

at::Tensor fake_quantize_per_token_ste(const at::Tensor& x, const TokenQuantizer& q) {
  const at::Tensor xq = fake_quantize_per_token(x, q);
  return x.requires_grad() ? x + (xq - x.detach()) : xq;
}

RowQuantParams per_channel_weight_params(const at::Tensor& w, int bits) {
  if (w.dim() != 2) throw Error("per-channel weight quantization: expected a matrix");
  const at::Tensor d = w.detach().to(at::kFloat);
  return params_from_range(at::clamp_max(std::get<0>(d.min(1)), 0.0), at::clamp_min(std::get<0>(d.max(1)), 0.0), bits);
}

at::Tensor fake_quantize_per_channel(const at::Tensor& w, int bits) {
  return fake_quantize_rows(w.detach().to(at::kFloat), per_channel_weight_params(w, bits));
}

at::Tensor fake_quantize_per_channel_ste(const at::Tensor& w, int bits) {
  const at::Tensor wq = fake_quantize_per_channel(w, bits);
  return w.requires_grad() ? w + (wq - w.detach()) : wq;
}

at::Tensor token_quantized_linear(const at::Tensor& x, const at::Tensor& w_tilde, const at::Tensor& b,
                                  const TokenQuantizer& q) {
  return parallel_linear(fake_quantize_per_token(x, q), w_tilde, b);
}

}  // namespace lorq::lraqvit
