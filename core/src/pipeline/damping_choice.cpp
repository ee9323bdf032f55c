#include "lorq/pipeline/damping_choice.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>

#include "lorq/common/error.h"
#include "lorq/quant/quantizer.h"

namespace lorq {

const std::vector<double>& default_gptq_damping_choices() {
  static const std::vector<double> choices{0.01, 0.03, 0.1, 0.3};
  return choices;
}

std::pair<double, double> cross_validated_errors(const at::Tensor& W, const RowQuantParams& p, const at::Tensor fit[2],
                                                 const at::Tensor judge[2], double damping, const GptqSettings& base) {
  c10::NoGradGuard no_grad;
  GptqSettings s = base;
  s.damping = damping;
  double compensated = 0;
  for (int k = 0; k < 2; ++k) {
    const GptqFactor f = gptq_factorize(fit[k], s);
    const at::Tensor values = gptq_values(W, p, f, s);
    compensated += output_error(W, fake_quantize_rows(values.to(W.scalar_type()), p), judge[1 - k]);
  }
  const double nearest = output_error(W, fake_quantize_rows(W, p), judge[0] + judge[1]);
  return {compensated, nearest};
}

DampingChoice choose_gptq_damping(const Model& model, const std::map<std::string, InputMoment> fold_moments[2],
                                  const std::map<std::string, InputMoment>* shared,
                                  const std::map<std::string, at::Tensor>& lfh, const std::vector<double>& candidates,
                                  const GptqSettings& base, int bits, const JobControl& job) {
  if (candidates.empty()) throw Error("gptq damping: no candidate dampings");
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  std::vector<double> sum(candidates.size(), 0.0);
  double total_weight = 0;
  DampingChoice out;
  const auto& layers = model.linear_layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    job.check();
    const std::string& name = layers[i].name;
    job.report({"damping", static_cast<int64_t>(i), static_cast<int64_t>(layers.size()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), name});
    at::Tensor fit[2], judge[2];
    bool usable = lfh.count(name) > 0;
    for (int k = 0; k < 2 && usable; ++k) {
      const auto it = fold_moments[k].find(name);
      if (it == fold_moments[k].end()) {
        usable = false;
        break;
      }
      InputMoment m = it->second;
      if (shared && shared->count(name)) {
        m.xtx = m.xtx + shared->at(name).xtx;  // a new tensor: the fold's own moment stays the judge
        m.rows += shared->at(name).rows;
      }
      fit[k] = compensation_moment({{name, m}}, name);
      judge[k] = it->second.xtx;
      usable = fit[k].defined();
    }
    if (!usable) continue;
    const at::Tensor W = model.weight(name).reshape({layers[i].out_features, layers[i].in_features}).to(at::kFloat);
    const at::Tensor H = lfh.at(name).reshape(W.sizes());
    const RowQuantParams p = search_row_ranges(W, bits, RangeError::Hessian, H);
    // The layer's weight in the score: its nearest rounding's LFH-estimated global error (calibration.h,
    // estimated_nsr, up to the normalisation every layer shares).
    const double weight =
        (H.to(at::kDouble) * (W - fake_quantize_rows(W, p)).to(at::kDouble).pow(2)).sum().item<double>();
    std::vector<double> ratio(candidates.size());
    bool finite = std::isfinite(weight) && weight > 0;
    for (size_t c = 0; c < candidates.size() && finite; ++c) {
      const auto [compensated, nearest] = cross_validated_errors(W, p, fit, judge, candidates[c], base);
      ratio[c] = nearest > 0 ? compensated / nearest : 1.0;
      finite &= std::isfinite(ratio[c]);
    }
    if (!finite) continue;  // e.g. a layer whose rounding changes nothing: it cannot tell the dampings apart
    for (size_t c = 0; c < candidates.size(); ++c) sum[c] += weight * ratio[c];
    total_weight += weight;
    ++out.layers;
  }
  if (out.layers == 0) {  // too few input rows per half for any layer: nothing to choose by
    out.damping = base.damping;
    return out;
  }
  size_t best = 0;
  for (size_t c = 0; c < candidates.size(); ++c) {
    out.scores.emplace_back(candidates[c], sum[c] / total_weight);
    if (sum[c] < sum[best]) best = c;
  }
  out.damping = candidates[best];
  job.report({"damping", static_cast<int64_t>(layers.size()), static_cast<int64_t>(layers.size()),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), ""});
  return out;
}

}  // namespace lorq
