#include "lorq/pipeline/compensated_estimate.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>

#include "lorq/common/error.h"

namespace lorq {

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// tr(D J Dᵀ) in float with a float64 sum: only a ratio of two of them is used.
double output_change(const at::Tensor& D, const at::Tensor& J) {
  return (at::mm(D, J) * D).sum(at::kDouble).item<double>();
}

bool uses_compensation(const LayerCandidates& c, const LayerOption& o) {
  if (o.kind == OptionKind::Quant) return c.weight_values.count(o.bits) > 0;
  return c.b_values.count(o.bits_b) > 0 || c.a_values.count({o.bits_a, o.bits_b}) > 0;
}

// The estimate of compensated_estimate.h for the anchored options of layers[index].
std::vector<double> corrected_estimates(Model& model, const Calibration& calib, const LayerCandidates& lc, size_t index,
                                        const CrossFit& fit, const at::Tensor& H, const std::vector<size_t>& anchored,
                                        const std::vector<at::Tensor>& Wts) {
  const at::Tensor W = model.weight(lc.layer).reshape({lc.out_features, lc.in_features}).to(at::kFloat);
  const Task& task = task_of(model);
  std::vector<double> out;
  for (const at::Tensor& Wt : Wts) out.push_back(estimated_nsr(W, Wt, H, calib, task));
  if (fit.bounds.empty()) return out;  // no folds to judge the compensation on: the plain estimate
  LayerCandidates nearest = lc;        // the same grids and factors, every tensor rounded from W, A, B
  nearest.weight_values.clear();
  nearest.b_values.clear();
  nearest.a_values.clear();
  at::Tensor J[2], J_both;
  for (size_t j = 0; j < anchored.size(); ++j) {
    const LayerOption& o = lc.options[anchored[j]];
    if (!uses_compensation(lc, o)) continue;  // rounded to nearest: the plain estimate is already the counterpart's
    if (!J_both.defined()) {
      for (int k = 0; k < 2; ++k) J[k] = fit.moments[k].at(lc.layer).xtx.to(at::kFloat);
      J_both = J[0] + J[1];
    }
    // Q(b): the nearest quantizer's own option, whose LFH estimate is what the estimate is calibrated like. The
    // rows' grids chosen for the compensation clip harder; nearest rounding on them would inflate both the LFH
    // estimate and the ratio's denominator, unevenly across bit widths (the first 4-bit allocation on DeiT-Tiny
    // priced 32 % above the measured optimum that way, against 12 % for the plain estimate).
    const at::Tensor Wn =
        o.kind == OptionKind::Quant
            ? fake_quantize_rows(W, search_row_ranges(W, o.bits, RangeError::Hessian, H.to(at::kFloat)))
            : compressed_weight(nearest, o, W).reshape_as(W);
    const double near = output_change(W - Wn, J_both);
    double compensated = 0;
    for (int k = 0; k < 2; ++k)  // fitted on fold k, judged on the other fold's inputs
      compensated += output_change(W - compressed_weight(fit.folds[k].at(index), o, W).reshape_as(W), J[1 - k]);
    const double lfh_nearest = estimated_nsr(W, Wn, H, calib, task);
    out[j] = near > 0 ? lfh_nearest * compensated / near : lfh_nearest;
  }
  return out;
}

std::string layer_line(int64_t done, int64_t total, const std::string& layer, const std::string& errors) {
  return "layer " + std::to_string(done) + "/" + std::to_string(total) + " " + layer + ": " + errors;
}

}  // namespace

std::string estimate_compensated_layer_errors(Model& model, const Calibration& calib, LayerCandidates& layer,
                                              size_t index, const CrossFit& fit, const GlobalErrorSettings& settings,
                                              const std::map<std::string, at::Tensor>& lfh) {
  const auto it = lfh.find(layer.layer);
  if (it == lfh.end()) throw Error("global error estimate: no label-free Hessian of layer " + layer.layer);
  c10::NoGradGuard no_grad;
  const at::Tensor& H = it->second;
  const LayerCandidates& lc = layer;
  return measure_layer_global_errors(model, calib, layer, settings, true, &lfh,
                                     [&](const std::vector<size_t>& anchored, const std::vector<at::Tensor>& Wts) {
                                       return corrected_estimates(model, calib, lc, index, fit, H, anchored, Wts);
                                     });
}

CrossFit estimate_cross_fitted_global_errors(Model& model, const Calibration& calib, CompressionAnalysis& a,
                                             const GptqSettings& gptq, const GlobalErrorSettings& s,
                                             const std::map<std::string, at::Tensor>& lfh,
                                             const std::map<std::string, InputMoment>* shared_moments,
                                             const JobControl& job, std::map<std::string, InputMoment>* fold_moments) {
  auto t = std::chrono::steady_clock::now();
  CrossFit fit = cross_fit_candidates(model, calib, a.layers, gptq, job, shared_moments, &lfh, fold_moments);
  a.stage_seconds.emplace_back("cross-fit", since(t));
  t = std::chrono::steady_clock::now();
  const int64_t n = static_cast<int64_t>(a.layers.size());
  for (int64_t i = 0; i < n; ++i) {
    job.check();
    LayerCandidates& lc = a.layers[i];
    // The nearest path's rule: a layer without a real LFH (a convolution) is measured at once.
    std::string errors = "measured";
    if (lc.low_rank_allowed && lfh.count(lc.layer))
      errors = estimate_compensated_layer_errors(model, calib, lc, static_cast<size_t>(i), fit, s, lfh);
    else
      measure_cross_fitted_layer(model, calib, lc, static_cast<size_t>(i), fit, s, &lfh);
    job.report({"global error estimate", i + 1, n, since(t), layer_line(i + 1, n, lc.layer, errors)});
  }
  a.stage_seconds.emplace_back("global error estimate", since(t));
  return fit;
}

void estimate_then_measure_cross_fitted_global_errors(Model& model, const Calibration& calib, CompressionAnalysis& a,
                                                      const GptqSettings& gptq, const GlobalErrorSettings& s,
                                                      const std::map<std::string, at::Tensor>& lfh,
                                                      const std::map<std::string, InputMoment>* shared_moments,
                                                      const JobControl& job, const AnalysisRevisionFn& publish,
                                                      std::map<std::string, InputMoment>* fold_moments) {
  CrossFit fit = estimate_cross_fitted_global_errors(model, calib, a, gptq, s, lfh, shared_moments, job, fold_moments);
  if (publish) publish(a);

  const auto t = std::chrono::steady_clock::now();
  // Every layer, the ones measured above included: the same measurement as without the estimate pass.
  measure_cross_fitted(model, calib, a.layers, std::move(fit), s, job, &lfh);
  a.stage_seconds.emplace_back("global error", since(t));
}

}  // namespace lorq
