// Activation quantizers (§8.2), their range calibration (§8.3) and the mixed-precision rule (§8.4). The LN folding,
// ridge regression and the orchestration live in activation_pipeline.cpp.
#include "lorq/quant/activation_quant.h"

#include <ATen/ATen.h>

#include <cmath>
#include <string>

#include "lorq/common/error.h"
#include "lorq/quant/quantizer.h"

namespace lorq {

namespace {

void check_bits(int bits, const char* what) {
  if (bits < 1 || bits > 8) throw Error(std::string(what) + ": bits must be in 1..8, got " + std::to_string(bits));
}

// A [1] or [C] float32 parameter on x's device, checked against x's last dimension.
at::Tensor param_for(const at::Tensor& p, const at::Tensor& x, const char* what, const char* name) {
  if (!p.defined() || p.dim() != 1 || (p.size(0) != 1 && (x.dim() == 0 || p.size(0) != x.size(-1))))
    throw Error(std::string(what) + ": " + name + " must be [1] or [channels of the last dimension]");
  return p.to(x.device(), at::kFloat);
}

// The candidate list's error rule (§8.3): strictly better than the best so far, starting at 1e10.
struct BestCandidate {
  double error = 1e10;
  int index = -1;
  void offer(double e, int i) {
    if (e < error) error = e, index = i;
  }
};

void calibrate_log_sqrt2(ActivationQuantizer& q, const at::Tensor& x, const std::vector<double>& percentiles) {
  const at::Tensor flat = x.reshape({1, -1});
  const at::Tensor cand = row_quantiles(flat, percentiles).reshape({-1});  // [P]
  at::Tensor scale = flat.max().reshape({1});                              // the incumbent
  BestCandidate best;
  for (int64_t i = 0; i < cand.size(0); ++i) {
    const at::Tensor delta = cand.slice(0, i, i + 1);
    if (!(delta.item<float>() > 0)) continue;  // a zero scale quantizes everything to 0 (log2 of +inf)
    const double mse = (fake_quantize_log_sqrt2(x, delta, q.bits) - x).pow_(2).mean().item<double>();
    best.offer(mse, static_cast<int>(i));
  }
  if (best.index >= 0) scale = cand.slice(0, best.index, best.index + 1).clone();
  if (!(scale.item<float>() > 0)) scale = at::ones({1}, x.options());  // an all-zero input: any Δ reproduces it
  q.scale = scale;
  q.zero_point = at::Tensor();
}

}  // namespace

at::Tensor fake_quantize_uniform(const at::Tensor& x, const at::Tensor& scale, const at::Tensor& zero_point, int bits) {
  check_bits(bits, "fake_quantize_uniform");
  const at::Tensor s = param_for(scale, x, "fake_quantize_uniform", "scale");
  const at::Tensor z = param_for(zero_point, x, "fake_quantize_uniform", "zero_point");
  const double qmax = static_cast<double>((1 << bits) - 1);
  at::Tensor out = at::div(x.to(at::kFloat), s);
  return out.round_().add_(z).clamp_(0.0, qmax).sub_(z).mul_(s);
}

at::Tensor fake_quantize_log_sqrt2(const at::Tensor& x, const at::Tensor& scale, int bits) {
  check_bits(bits, "fake_quantize_log_sqrt2");
  const at::Tensor s = param_for(scale, x, "fake_quantize_log_sqrt2", "scale");
  if (s.size(0) != 1) throw Error("fake_quantize_log_sqrt2: the scale must be one value");
  const double levels = static_cast<double>(1 << bits);
  // p = round(−2·log2(x/Δ)); x = 0 gives +inf, x < 0 NaN: both are "below the smallest level" and become 0.
  at::Tensor p = at::div(x.to(at::kFloat), s).log2_().mul_(-2.0).round_();
  const at::Tensor zero = at::logical_not(p < levels);  // p ≥ 2^b, or NaN
  p.clamp_(0.0, levels - 1);
  // Δ·2^(−⌈p/2⌉)·(√2 if p odd), as the reference evaluates it.
  const at::Tensor odd = p.remainder(2.0);
  at::Tensor out = at::exp2(p.div_(2.0).ceil_().neg_());
  out.mul_(odd.mul_(static_cast<float>(std::sqrt(2.0) - 1.0)).add_(1.0)).mul_(s);
  return out.masked_fill_(zero, 0.0);
}

at::Tensor ActivationQuantizer::operator()(const at::Tensor& x) const {
  if (!calibrated()) throw Error("activation quantizer used before calibration");
  if (type == ActQuantizerType::LogSqrt2) return fake_quantize_log_sqrt2(x, scale, bits);
  return fake_quantize_uniform(x, scale, zero_point, bits);
}

const std::vector<double>& activation_percentiles() {
  static const std::vector<double> p = {0.999, 0.9999, 0.99999};
  return p;
}

void calibrate_activation_quantizer(ActivationQuantizer& q, const at::Tensor& x_in,
                                    const std::vector<double>& percentiles) {
  check_bits(q.bits, "calibrate_activation_quantizer");
  if (!x_in.defined() || x_in.numel() == 0) throw Error("calibrate_activation_quantizer: empty activation");
  if (percentiles.empty()) throw Error("calibrate_activation_quantizer: no percentiles");
  const at::Tensor x = x_in.detach().to(at::kFloat);
  if (!at::isfinite(x).all().item<bool>())
    throw Error("calibrate_activation_quantizer: the activation holds non-finite values");
  switch (q.type) {
    case ActQuantizerType::LogSqrt2:
      calibrate_log_sqrt2(q, x, percentiles);
      return;
    case ActQuantizerType::PerTensor: {
      // One "row" holding every entry: the weight search's quantiles, candidates and strictly-better rule.
      const RowQuantParams p =
          search_row_ranges(x.reshape({1, -1}), q.bits, RangeError::Plain, {}, {}, {}, percentiles);
      q.scale = p.scale;
      q.zero_point = p.zero_point;
      return;
    }
    case ActQuantizerType::PerChannel: {
      if (x.dim() < 1) throw Error("calibrate_activation_quantizer: a per-channel quantizer needs a channel dim");
      const int64_t C = x.size(-1);
      const at::Tensor rows = x.reshape({-1, C}).t().contiguous();  // [C, every (batch, token) entry]
      const RowQuantParams p = search_row_ranges(rows, q.bits, RangeError::Plain, {}, {}, {}, percentiles);
      q.scale = p.scale;
      q.zero_point = p.zero_point;
      return;
    }
  }
}

std::map<std::string, int> activation_mixed_precision(const std::map<std::string, int64_t>& sizes, int bits) {
  check_bits(bits, "activation_mixed_precision");
  int64_t s_max = 0;
  for (const auto& [name, s] : sizes) s_max = std::max(s_max, s);
  std::map<std::string, int> out;
  for (const auto& [name, s] : sizes) {
    int chosen = 2;  // the smallest option when none fits (only if bits < 2)
    for (int b : {2, 3, 4, 6, 8})
      if (s * b <= s_max * bits) chosen = b;
    out[name] = chosen;
  }
  return out;
}

}  // namespace lorq
