// Steps 8–10 of the pipeline (spec §8): placing and calibrating the activation quantizers, LayerNorm
// reparameterization (§8.5) and the ridge-regression weight correction (§8.6).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <memory>

#include "lorq/quant/activation_quant.h"
#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

const char* kStage = "activation quantization";

// Above this many multiply-adds the ridge products run in float32 (DeiT-Tiny: proj and the head in float64).
constexpr double kFp64ProductFlops = 1e9;

}  // namespace

ActivationQuantizer fold_layernorm_quantizer(Model& model, const ActivationPoint& point,
                                             const ActivationQuantizer& pc) {
  if (point.kind != ActivationKind::LayerNormOutput || point.norm.empty() || point.consumer.empty())
    throw Error("fold_layernorm_quantizer: '" + point.name + "' is not a LayerNorm output read by a linear layer");
  if (pc.type != ActQuantizerType::PerChannel || !pc.calibrated())
    throw Error("fold_layernorm_quantizer: '" + point.name + "' needs a calibrated per-channel quantizer");
  const at::Tensor gamma = model.tensor(point.norm + ".weight").to(at::kDouble);
  const at::Tensor beta = model.tensor(point.norm + ".bias").to(at::kDouble);
  const at::Tensor w = model.weight(point.consumer).to(at::kDouble);
  const int64_t C = gamma.size(0);
  if (pc.scale.size(0) != C || w.size(1) != C)
    throw Error("fold_layernorm_quantizer: '" + point.name + "' has " + std::to_string(pc.scale.size(0)) +
                " channel scales for a LayerNorm of " + std::to_string(C) + " and a consumer reading " +
                std::to_string(w.size(1)));

  // Targets: the mean scale and the (unrounded) mean zero-point; r_c maps channel c's step onto it and δ_c its
  // lower clip point lo_c = −z_c·Δ_c onto lo̅ = −z̄·Δ̄.
  const at::Tensor delta = pc.scale.to(at::kDouble), zp = pc.zero_point.to(at::kDouble);
  const at::Tensor delta_bar = delta.mean(), z_bar = zp.mean();
  const at::Tensor lo = -zp * delta, lo_bar = -z_bar * delta_bar;
  const at::Tensor r = delta / delta_bar;
  const at::Tensor shift = lo / r - lo_bar;

  // LN output u becomes u/r − δ; the consumer undoes it: W′ = W·diag(r), b′ = b + W′δ, so W′u′ + b′ = Wu + b.
  model.set_tensor(point.norm + ".weight", gamma / r);
  model.set_tensor(point.norm + ".bias", beta / r - shift);
  const at::Tensor w_new = w * r.unsqueeze(0);
  const at::Tensor b_old = model.bias(point.consumer);
  at::Tensor b_new = at::mv(w_new, shift);
  if (b_old.defined()) b_new += b_old.to(at::kDouble);
  model.set_weight(point.consumer, w_new);
  model.set_bias(point.consumer, b_new);

  ActivationQuantizer pt;
  pt.type = ActQuantizerType::PerTensor;
  pt.bits = pc.bits;
  pt.scale = delta_bar.to(at::kFloat).reshape({1});
  pt.zero_point = z_bar.to(at::kFloat).reshape({1});
  return pt;
}

CorrectedLinear ridge_regression_correction(const at::Tensor& x_fp, const at::Tensor& x_q, const at::Tensor& w,
                                            const at::Tensor& b, double lambda) {
  if (!(lambda > 0)) throw Error("ridge_regression_correction: lambda must be > 0");
  if (!x_fp.defined() || !x_q.defined() || !w.defined() || w.dim() != 2 || x_fp.sizes() != x_q.sizes() ||
      x_fp.dim() < 1 || x_fp.size(-1) != w.size(1) || (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0))))
    throw Error("ridge_regression_correction: expected x_fp and x_q [..., n], w [m, n] and b [m] or none");
  const int64_t n = w.size(1), m = w.size(0);
  const bool has_bias = b.defined();
  const at::Tensor xq = x_q.reshape({-1, n}).to(at::kDouble);
  const int64_t rows = xq.size(0);
  // Y_fp − X̃_q W̃ᵀ = (X_fp − X_q) Wᵀ: the bias cancels, and no float32 output enters the target.
  const at::Tensor residual = at::mm(x_fp.reshape({-1, n}).to(at::kDouble) - xq, w.to(at::kDouble).t());  // [N, m]
  // The normal equations' products: float64 while cheap (the head: few rows, small λ, so precision matters);
  // the large token layers (λ = 2000 keeps them well conditioned) use the thread-split float32 GEMM, as the
  // reference computes everything in fp32. The solve is float64 either way.
  const bool products_in_fp64 = static_cast<double>(rows) * n * (n + m) <= kFp64ProductFlops;
  at::Tensor gram = at::zeros({n + has_bias, n + has_bias}, xq.options());
  at::Tensor rhs = at::empty({n + has_bias, m}, xq.options());
  if (products_in_fp64) {
    gram.narrow(0, 0, n).narrow(1, 0, n).copy_(at::mm(xq.t(), xq));
    rhs.narrow(0, 0, n).copy_(at::mm(xq.t(), residual));
  } else {
    const at::Tensor xt = xq.t().to(at::kFloat).contiguous();  // [n, N]
    gram.narrow(0, 0, n).narrow(1, 0, n).copy_(parallel_linear(xt, xt, {}));
    rhs.narrow(0, 0, n).copy_(parallel_linear(xt, residual.t().to(at::kFloat).contiguous(), {}));
  }
  if (has_bias) {  // the ones column of X̃
    const at::Tensor col = xq.sum(0);
    gram.narrow(0, n, 1).narrow(1, 0, n).copy_(col.unsqueeze(0));
    gram.narrow(0, 0, n).narrow(1, n, 1).copy_(col.unsqueeze(1));
    gram[n][n] = static_cast<double>(xq.size(0));
    rhs.narrow(0, n, 1).copy_(residual.sum(0, true));
  }
  gram.diagonal().add_(lambda);
  const at::Tensor beta = at::cholesky_solve(rhs, at::linalg_cholesky(gram));  // [n(+1), m]
  CorrectedLinear out;
  out.weight = (w.to(at::kDouble) + beta.narrow(0, 0, n).t()).to(at::kFloat);
  if (has_bias) out.bias = (b.to(at::kDouble) + beta[n]).to(at::kFloat);
  return out;
}

void enable_activation_quantization(Model& model, const ActivationQuantization& aq) {
  model.clear_activation_hooks();
  for (const auto& [point, q] : aq.quantizers) {
    if (!q.calibrated()) throw Error("enable_activation_quantization: '" + point + "' is not calibrated");
    model.set_activation_hook(point, [q](const at::Tensor& x) { return q(x); });
  }
}

void disable_activation_quantization(Model& model) { model.clear_activation_hooks(); }

namespace {

// The bit-width of every point: uniform, or §8.4 from one image's per-sample tensor sizes.
std::map<std::string, int> assign_bits(Model& model, const at::Tensor& images, const ActQuantSettings& s) {
  std::map<std::string, int> bits;
  if (!s.mixed_precision) {
    for (const auto& p : model.activation_points()) bits[p.name] = s.bits;
    return bits;
  }
  std::map<std::string, int64_t> sizes;
  for (const auto& p : model.activation_points()) {
    const std::string name = p.name;
    model.set_activation_hook(name, [&sizes, name](const at::Tensor& x) {
      sizes[name] = x.numel() / std::max<int64_t>(1, x.size(0));
      return x;
    });
  }
  model.forward(images.narrow(0, 0, 1));
  model.clear_activation_hooks();
  return activation_mixed_precision(sizes, s.bits);
}

// §8.3: one forward pass with every quantizer enabled; each fits its range on its (already upstream-quantized)
// input when it first sees it, then quantizes that input.
void calibrate_ranges(Model& model, const at::Tensor& images, const ActQuantSettings& s, ActivationQuantization& aq,
                      const JobControl& job, double t0) {
  const int64_t total = static_cast<int64_t>(aq.quantizers.size());
  int64_t done = 0;
  for (auto& [point, q] : aq.quantizers) {
    ActivationQuantizer* qp = &q;
    const std::string name = point;
    model.set_activation_hook(point, [&, qp, name](const at::Tensor& x) {
      job.check();
      if (!qp->calibrated()) calibrate_activation_quantizer(*qp, x, s.percentiles);
      job.report({kStage, ++done, total, now_s() - t0, "calibrated " + name});
      return (*qp)(x);
    });
  }
  model.forward(images);
  model.clear_activation_hooks();
  for (const auto& [point, q] : aq.quantizers)
    if (!q.calibrated()) throw Error("activation point '" + point + "' was not reached by the calibration pass");
}

// §8.6 with quantization off. One pass in effect: stage i's layers are corrected only after stage i has run, so
// every recorded input comes from the uncorrected network, yet only one stage's inputs are held at a time.
void ridge_correct(Model& model, const at::Tensor& images, const ActQuantSettings& s, ActivationQuantization& aq,
                   const JobControl& job, double t0) {
  // The layer each quantizer feeds, unless it reads an 8-bit LayerNorm output (qkv, fc1 at A8 or with MP).
  std::map<std::string, std::string> input_point;  // layer -> point
  for (const auto& p : model.activation_points()) {
    if (p.consumer.empty()) continue;
    if (p.kind == ActivationKind::LayerNormOutput && aq.quantizers.at(p.name).bits == 8) continue;
    input_point[p.consumer] = p.name;
  }
  std::vector<std::string> order;  // network order
  for (const auto& l : model.linear_layers())
    if (input_point.count(l.name)) order.push_back(l.name);

  // The observer fires only for the layers that ran, so each stage (and finish, for the head) leaves exactly its
  // own layers' inputs behind.
  std::map<std::string, at::Tensor> inputs;
  auto correct_recorded = [&] {
    for (const auto& layer : order) {
      auto it = inputs.find(layer);
      if (it == inputs.end()) continue;
      job.check();
      const at::Tensor& x_fp = it->second;
      const ActivationQuantizer& q = aq.quantizers.at(input_point.at(layer));
      // The head's own λ: the model declares which layer is its head (its inputs are pooled, one row per image).
      const double lambda = model.layer(layer).role == LayerRole::Head ? s.ridge_lambda_head : s.ridge_lambda;
      const CorrectedLinear c =
          ridge_regression_correction(x_fp, q(x_fp), model.weight(layer), model.bias(layer), lambda);
      model.set_weight(layer, c.weight);
      if (c.bias.defined()) model.set_bias(layer, c.bias);
      aq.corrected_layers.push_back(layer);
      job.report({kStage, static_cast<int64_t>(aq.corrected_layers.size()), static_cast<int64_t>(order.size()),
                  now_s() - t0, "ridge regression " + layer});
    }
    inputs.clear();
  };

  model.clear_activation_hooks();
  model.set_observer(order,
                     [&](const std::string& layer, const at::Tensor& in, const at::Tensor&) { inputs[layer] = in; });
  StageState x = model.embed(images);
  for (int stage = 0; stage < model.num_stages(); ++stage) {
    x = model.run_stage(stage, x);
    correct_recorded();
  }
  model.finish(x);
  correct_recorded();
  model.clear_observer();
}

}  // namespace

namespace {

ActivationQuantization run_activation_quantization(Model& model, const at::Tensor& images, const ActQuantSettings& s,
                                                   const JobControl& job, double t0) {
  ActivationQuantization aq;
  const std::map<std::string, int> bits = assign_bits(model, images, s);
  for (const auto& p : model.activation_points()) {
    ActivationQuantizer q;
    q.bits = bits.at(p.name);
    if (p.kind == ActivationKind::Softmax && s.log_sqrt2_softmax) q.type = ActQuantizerType::LogSqrt2;
    // At 8 bits an LN output is quantized per tensor and never folded (§8.3).
    if (p.kind == ActivationKind::LayerNormOutput && q.bits < 8) q.type = ActQuantizerType::PerChannel;
    aq.quantizers[p.name] = q;
  }

  calibrate_ranges(model, images, s, aq, job, t0);

  if (s.fold_layernorm) {
    for (const auto& p : model.activation_points()) {
      ActivationQuantizer& q = aq.quantizers.at(p.name);
      if (q.type != ActQuantizerType::PerChannel) continue;
      job.check();
      q = fold_layernorm_quantizer(model, p, q);
      aq.folded_norms.push_back(p.norm);
    }
  }

  if (s.ridge_regression) ridge_correct(model, images, s, aq, job, t0);
  return aq;
}

}  // namespace

ActivationQuantization quantize_activations(Model& model, const at::Tensor& calib_images, const ActQuantSettings& s,
                                            const JobControl& job) {
  const double t0 = now_s();
  if (s.bits < 2 || s.bits > 8) throw Error("activation bits must be in 2..8, got " + std::to_string(s.bits));
  if (s.num_images < 1) throw Error("activation quantization needs at least one calibration image");
  if (!calib_images.defined() || calib_images.dim() != 4 || calib_images.size(0) == 0)
    throw Error("activation quantization needs calibration images [N, C, H, W]");
  if (s.percentiles.empty()) throw Error("activation quantization needs at least one percentile");
  const at::NoGradGuard no_grad;
  const at::Tensor images = calib_images.narrow(0, 0, std::min<int64_t>(s.num_images, calib_images.size(0)));
  model.clear_activation_hooks();
  model.clear_observer();
  job.check();

  ActivationQuantization aq;
  try {
    aq = run_activation_quantization(model, images, s, job, t0);
  } catch (...) {  // Cancelled or an error: leave no temporary hook or observer behind
    model.clear_activation_hooks();
    model.clear_observer();
    throw;
  }
  enable_activation_quantization(model, aq);
  aq.seconds = now_s() - t0;
  job.report({kStage, 1, 1, aq.seconds, "done"});
  return aq;
}

}  // namespace lorq
