#pragma once
// The weight-compression pipeline of MLoRQ (spec §3-§7, §9): calibration -> sensitivity (LFH) -> per-layer
// candidates and Pareto fronts -> global errors -> exact budget allocation -> apply.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lorq/alloc/budget_allocator.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/sensitivity.h"

namespace lorq {

struct CompressSettings {
  CalibrationSettings calibration;  // images for the float reference and the global error
  int lfh_images = 8;               // the first calibration images, for the LFH
  LfhOptions lfh;
  CandidateSettings candidates;
  GlobalErrorSettings global_error;
};

// Everything that depends on (model, images, settings) but not on the budget: re-allocating is then instant.
struct CompressionAnalysis {
  std::vector<LayerCandidates> layers;  // in the model's layer order
  std::map<std::string, at::Tensor> lfh;  // every layer's label-free Hessian (for the final refit, spec §9)
  int64_t compressible_params = 0;
  std::vector<std::string> calibration_files;  // the images the analysis saw (evaluate on others)
  std::vector<std::string> moment_files;       // more images whose inputs made the GPTQ moments (evaluate on others)
  double gptq_damping = 0;  // the damping the compensation used (gptq; chosen or set), 0 for nearest rounding
  // CandidateSettings::gptq_damping_choices: each candidate's cross-validation score (empty when loaded from a cache)
  std::vector<std::pair<double, double>> gptq_damping_scores;
  std::vector<std::string> warnings;
  std::vector<std::pair<std::string, double>> stage_seconds;  // stage name, wall time (stages run by this call)
  std::vector<std::string> cached_stages;  // stages loaded from the session cache instead of computed
  std::string cache_dir;                   // the session cache used ("" without one)
  // Layers whose global errors were measured on the network (LayerCandidates::errors_measured); the others carry
  // LFH estimates. Equal to layers.size() for a measured analysis.
  int layers_measured() const;
};

// Receives a complete analysis (every layer with options and global errors) while analyze_model still runs.
using AnalysisRevisionFn = std::function<void(const CompressionAnalysis&)>;

class SessionCache;
// With a cache, every stage already cached is loaded instead of computed, and each completed stage is saved.
// With `on_revision` (and settings.global_error.estimate off) the global errors are first estimated from the LFH
// for every layer and then measured layer by layer (pipeline/progressive_errors.h): on_revision receives the
// estimated analysis and each partly measured one, on the calling thread; the analysis returned is the last
// revision and equals the analysis without on_revision exactly. A gptq analysis publishes its estimated analysis
// and then measures every layer cross-fitted (pipeline/compensated_estimate.h). Only a completely measured analysis
// is cached.
CompressionAnalysis analyze_model(Model& model, const ImageSet& calibration_images, const CompressSettings& settings,
                                  const JobControl& job = {}, const SessionCache* cache = nullptr,
                                  const AnalysisRevisionFn& on_revision = {});

// Allocation, Constraints, LayerConstraint, Exclusion and kKeepFloat: lorq/types.h (shared with the front ends).

// The exact budget allocation of an analysis under constraints, in the analysis' own option indices. Built once per
// (analysis, constraints); solve() is then cheap enough for every movement of a budget slider. Thread-safe const.
class LayerAllocator {
 public:
  // Throws lorq::Error on a constraint naming an unknown layer or option, a pin on an excluded layer, a layer
  // left with no allowed option, or a group without a common option.
  explicit LayerAllocator(const CompressionAnalysis& analysis, const Constraints& constraints = {});
  int64_t min_bytes() const { return allocator_->min_bytes(); }  // smallest achievable size
  int64_t max_bytes() const { return largest_; }                 // every layer (group) at its biggest allowed choice
  // The exact optimum. Throws lorq::Error naming both limits when the budget is outside [min_bytes, max_bytes].
  Allocation solve(int64_t budget_bytes) const;
  // The optimal total error for every budget from min_bytes() on (a step function; see BudgetAllocator).
  std::vector<CurvePoint> tradeoff_curve() const { return allocator_->tradeoff_curve(); }

 private:
  std::shared_ptr<const BudgetAllocator> allocator_;
  std::vector<std::vector<int>> options_;  // per layer: allocator option -> analysis option (or kKeepFloat)
  int64_t largest_ = 0;
};

// LayerAllocator(analysis, constraints).solve(budget_bytes).
Allocation allocate(const CompressionAnalysis& analysis, int64_t budget_bytes, const Constraints& constraints = {});
// Every layer at Q(bits): the uniform per-row baseline at the same memory as an average of `bits`.
Allocation uniform_allocation(const CompressionAnalysis& analysis, int bits);

// Replaces every compressed layer's weight by its chosen W̃ (fake quantization / the factor product).
void apply_allocation(Model& model, const CompressionAnalysis& analysis, const Allocation& allocation);

}  // namespace lorq
