// One layer's learned rounding (spec §10.1, §10.3): the rectified-sigmoid rounding variables, the soft and hard
// quantizers, the annealed regularizer and the RAdam training loop on a layer's (input, target) rows.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/quant/adaptive_rounding.h"
#include "lorq/quant/radam.h"
#include "rounding_variable.h"

namespace lorq {

RoundingSettings RoundingSettings::spec_defaults() {
  RoundingSettings s;
  s.iterations = 20000;
  s.images = 1024;
  s.batch = 32;
  s.tokens_per_image = 0;
  s.rows_per_step = 32 * 197;
  s.keep_nearest_if_worse = false;
  s.readout_share = 0;  // the spec's plain MSE over every token
  s.augmented_views = 0;
  s.scope = RoundingScope::Layer;  // the spec's 1024 images are augmented copies alone; see RoundingSettings
  s.record_every = 20;
  return s;
}

namespace rounding {

at::Tensor rectified_sigmoid(const at::Tensor& alpha) {
  return at::clamp(at::sigmoid(alpha) * (kZeta - kGamma) + kGamma, 0, 1);
}

at::Tensor initial_alpha(const QuantizedTensor& q) {
  c10::NoGradGuard no_grad;
  const at::Tensor scale = q.params.scale.to(at::kFloat).reshape({-1, 1});
  const at::Tensor s = q.values / (scale + kEpsilon);
  at::Tensor frac = s - at::floor(s);
  if (q.compensated) {
    // Start at the compensated codes: h = 1 − margin where the code rounds up from ⌊V/Δ⌋, margin where it rounds
    // down (inside the clip, so that the gradient reaches α). The soft weight is then the codes' within margin·Δ.
    const at::Tensor zero = q.params.zero_point.to(at::kFloat).reshape({-1, 1});
    const at::Tensor up = (q.codes.to(at::kFloat) - zero - at::floor(s)).clamp(0, 1);
    frac = up * (1 - 2 * kCodeStartMargin) + kCodeStartMargin;
  }
  return -at::log(at::clamp_min((kZeta - kGamma) / (frac - kGamma) - 1, 1e-16));
}

at::Tensor soft_dequantized(const QuantizedTensor& q, const at::Tensor& alpha) {
  RoundingVariable v(q);
  return v.soft(rectified_sigmoid(alpha));
}

at::Tensor hard_codes(const QuantizedTensor& q, const at::Tensor& alpha) {
  c10::NoGradGuard no_grad;
  const RoundingVariable v(q);
  return codes_from(v.floor_codes, (alpha >= 0).to(at::kFloat), v.zero, v.qmax);
}

at::Tensor regularizer(const at::Tensor& alpha, double beta) {
  return (1 - (2 * rectified_sigmoid(alpha) - 1).abs().pow(beta)).mean();
}

double beta_at(int64_t t, int64_t T, const RoundingSettings& s) {
  const double warm = s.warmup * static_cast<double>(T);
  if (static_cast<double>(t) < warm) return s.beta_start;
  const double span = static_cast<double>(T) - warm;
  const double left = span > 0 ? std::max(0.0, 1 - (static_cast<double>(t) - warm) / span) : 0.0;
  return s.beta_end + (s.beta_start - s.beta_end) * left;
}

double reconstruction_error(const CompressedLayer& layer, const at::Tensor& bias, const at::Tensor& X,
                            const at::Tensor& Y) {
  c10::NoGradGuard no_grad;
  const at::Tensor W = layer.dequantized_weight();
  if (!W.defined()) throw Error(layer.layer + ": a float layer has no rounding to measure");
  double sum = 0;
  const int64_t R = X.size(0), chunk = 8192;
  for (int64_t r0 = 0; r0 < R; r0 += chunk) {
    const int64_t r1 = std::min(R, r0 + chunk);
    sum += (at::linear(X.slice(0, r0, r1), W, bias) - Y.slice(0, r0, r1)).pow(2).sum().item<double>();
  }
  return R > 0 ? sum / (static_cast<double>(R) * Y.size(1)) : 0.0;
}

double reconstruction_loss(const CompressedLayer& layer, const at::Tensor& bias, const LayerRoundingData& d,
                           double readout_share) {
  const double plain = reconstruction_error(layer, bias, d.X, d.Y);
  if (!d.readout_X.defined() || readout_share <= 0) return plain;
  return (1 - readout_share) * plain + readout_share * reconstruction_error(layer, bias, d.readout_X, d.readout_Y);
}

LayerRoundingResult learn_layer(CompressedLayer& layer, const at::Tensor& bias, const at::Tensor& X,
                                const at::Tensor& Y, const RoundingSettings& s, const JobControl& job,
                                const std::function<void(int, double, double, double)>& on_step) {
  return learn_layer(layer, bias, LayerRoundingData{X, Y, {}, {}}, s, job, on_step);
}

LayerRoundingResult learn_layer(CompressedLayer& layer, const at::Tensor& bias, const LayerRoundingData& data,
                                const RoundingSettings& s, const JobControl& job,
                                const std::function<void(int, double, double, double)>& on_step) {
  const auto start = std::chrono::steady_clock::now();
  if (layer.form == LayerForm::Float) throw Error(layer.layer + ": a float layer has no rounding to learn");
  if (s.iterations < 0 || s.rows_per_step < 1 || s.record_every < 1)
    throw Error("rounding: iterations must be >= 0, rows_per_step and record_every >= 1");
  if (s.readout_share < 0 || s.readout_share > 1) throw Error("rounding: readout_share must be in [0, 1]");
  const at::Tensor &X = data.X, &Y = data.Y;
  if (X.dim() != 2 || Y.dim() != 2 || X.size(0) != Y.size(0) || X.size(0) == 0)
    throw Error(layer.layer + ": rounding data must be [rows, in] and [rows, out] with the same rows");
  const at::Tensor &Xr = data.readout_X, &Yr = data.readout_Y;
  const bool readout = Xr.defined() && s.readout_share > 0;
  if (readout && (Xr.dim() != 2 || !Yr.defined() || Yr.dim() != 2 || Xr.size(0) != Yr.size(0) || Xr.size(0) == 0 ||
                  Xr.size(1) != X.size(1) || Yr.size(1) != Y.size(1)))
    throw Error(layer.layer + ": readout rows must be [rows, in] and [rows, out] like the others");
  const double share = readout ? s.readout_share : 0.0;
  const bool low_rank = layer.form == LayerForm::LowRank;
  const std::vector<QuantizedTensor*> tensors = tensors_of(layer);
  std::vector<RoundingVariable> vars;
  std::vector<at::Tensor> params;
  for (const QuantizedTensor* q : tensors) {
    vars.emplace_back(*q);
    params.push_back(vars.back().alpha);
  }

  LayerRoundingResult result;
  result.layer = layer.layer;
  result.nearest_error = reconstruction_loss(layer, bias, data, share);

  RAdam optimizer(params, {s.lr, 0.9, 0.999, 1e-8});
  // Per-layer step sampling from the seed and the layer's name (FNV: the same draws on every platform).
  const uint64_t name_hash = std::stoull(fnv1a64_hex(layer.layer.data(), layer.layer.size()), nullptr, 16);
  at::Generator gen = at::detail::createCPUGenerator(s.seed ^ name_hash);
  const int64_t R = X.size(0), Rr = readout ? Xr.size(0) : 0;
  const bool all_rows = R <= s.rows_per_step, all_readout = Rr <= s.rows_per_step;
  // A layer's forward on one batch of rows through the soft weights.
  auto soft_forward = [&](const at::Tensor& x, const std::vector<at::Tensor>& w) {
    return low_rank ? at::linear(at::linear(x, w[1]), w[0], bias) : at::linear(x, w[0], bias);
  };
  {
    c10::AutoGradMode grad_on(true);
    for (int it = 0; it < s.iterations; ++it) {
      job.check();  // between iterations: the layer's codes are untouched until training completes
      at::Tensor xb = X, yb = Y;
      if (!all_rows) {
        const at::Tensor rows = at::randint(R, {s.rows_per_step}, gen, at::kLong);
        xb = X.index_select(0, rows);
        yb = Y.index_select(0, rows);
      }
      const double beta = beta_at(it, s.iterations, s);
      std::vector<at::Tensor> h, w;
      for (const RoundingVariable& v : vars) {
        h.push_back(rectified_sigmoid(v.alpha));
        w.push_back(v.soft(h.back()));
      }
      at::Tensor rec = at::mse_loss(soft_forward(xb, w), yb);
      if (readout) {
        at::Tensor xr = Xr, yr = Yr;
        if (!all_readout) {
          const at::Tensor rows = at::randint(Rr, {s.rows_per_step}, gen, at::kLong);
          xr = Xr.index_select(0, rows);
          yr = Yr.index_select(0, rows);
        }
        rec = (1 - share) * rec + share * at::mse_loss(soft_forward(xr, w), yr);
      }
      at::Tensor reg = at::zeros({}, X.options());
      for (const at::Tensor& hv : h) reg = reg + (1 - (2 * hv - 1).abs().pow(beta)).mean();
      reg = reg * s.reg_factor;
      const at::Tensor loss = rec + reg;
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      const double rec_v = rec.item<double>(), reg_v = reg.item<double>();
      result.iterations = it + 1;
      if (it % s.record_every == 0) {
        result.reconstruction.push_back(static_cast<float>(rec_v));
        result.regularizer.push_back(static_cast<float>(reg_v));
      }
      if (on_step) on_step(it, rec_v, reg_v, beta);
      if (rec_v + reg_v < s.early_stop_loss) break;
    }
  }

  // Hard rounding: the learned codes replace nearest rounding (unless they reconstruct worse and the guard is on).
  c10::NoGradGuard no_grad;
  const HardRounding hard = take_hard_codes(tensors, vars);
  result.learned_error = reconstruction_loss(layer, bias, data, share);
  result.flipped_fraction = hard.flipped_fraction();
  if (s.keep_nearest_if_worse && result.learned_error > result.nearest_error) {
    hard.restore(tensors);
    result.kept_nearest = true;
  } else {
    layer.rounding_learned = true;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace rounding
}  // namespace lorq
