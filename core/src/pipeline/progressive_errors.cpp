#include "lorq/pipeline/progressive_errors.h"

#include <chrono>
#include <string>

#include "lorq/pipeline/calibration.h"

namespace lorq {

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
std::string layer_line(int64_t done, int64_t total, const std::string& layer, const std::string& errors) {
  return "layer " + std::to_string(done) + "/" + std::to_string(total) + " " + layer + ": " + errors;
}
}  // namespace

void estimate_then_measure_global_errors(Model& model, const Calibration& calib, CompressionAnalysis& a,
                                         const GlobalErrorSettings& s, const std::map<std::string, at::Tensor>& lfh,
                                         const JobControl& job, const AnalysisRevisionFn& publish) {
  const int64_t n = static_cast<int64_t>(a.layers.size());
  auto t = std::chrono::steady_clock::now();
  // The same rule as the estimate-only analysis: layers without a real LFH (convolutions) are measured at once.
  for (int64_t i = 0; i < n; ++i) {
    job.check();
    LayerCandidates& lc = a.layers[i];
    const bool estimate = lc.low_rank_allowed && lfh.count(lc.layer);
    const std::string errors = measure_layer_global_errors(model, calib, lc, s, estimate, &lfh);
    job.report({"global error estimate", i + 1, n, since(t), layer_line(i + 1, n, lc.layer, errors)});
  }
  a.stage_seconds.emplace_back("global error estimate", since(t));
  std::vector<size_t> estimated;
  for (size_t i = 0; i < a.layers.size(); ++i)
    if (!a.layers[i].errors_measured) estimated.push_back(i);
  if (publish) publish(a);

  t = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(estimated.size());
  for (int64_t k = 0; k < total; ++k) {
    job.check();
    LayerCandidates& lc = a.layers[estimated[k]];
    // Measured on a copy: a cancelled measurement leaves the layer's estimates whole.
    LayerCandidates measured = lc;
    const std::string errors = measure_layer_global_errors(model, calib, measured, s, false, &lfh);
    lc = std::move(measured);
    job.report({"global error", k + 1, total, since(t), layer_line(k + 1, total, lc.layer, errors)});
    if (publish && k + 1 < total) publish(a);
  }
  a.stage_seconds.emplace_back("global error", since(t));
}

}  // namespace lorq
