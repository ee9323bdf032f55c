#pragma once
// The weight-compression pipeline of MLoRQ (spec §3-§7, §9): calibration -> sensitivity (LFH) -> per-layer
// candidates and Pareto fronts -> global errors -> exact budget allocation -> apply.
#include <map>
#include <string>
#include <vector>

#include "lorq/budget_allocator.h"
#include "lorq/calibration.h"
#include "lorq/candidates.h"
#include "lorq/model.h"
#include "lorq/sensitivity.h"

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
  int64_t compressible_params = 0;
  std::vector<std::string> calibration_files;  // the images the analysis saw (evaluate on others)
  std::vector<std::string> warnings;
  std::vector<std::pair<std::string, double>> stage_seconds;  // stage name, wall time
};

class SessionCache;
// With a cache, every stage already cached is loaded instead of computed, and each completed stage is saved.
CompressionAnalysis analyze_model(Model& model, const ImageSet& calibration_images, const CompressSettings& settings,
                                  const JobControl& job = {}, const SessionCache* cache = nullptr);

struct Allocation {
  int64_t budget_bytes = 0;
  std::vector<int> choice;  // per layer: index into its options
  int64_t bytes = 0;
  double predicted_error = 0;  // Σ of the chosen options' global errors
};

// What a user can impose on one layer (the GUI's pins and constraints).
struct LayerConstraint {
  int pinned_option = -1;  // index into the layer's options, or -1
  int min_bits = 0;        // Q(b) needs b >= min_bits; LR needs both factor bit widths >= min_bits
  int64_t max_rank = -1;   // LR options above this rank are not allowed (-1: no limit; 0: no low rank)
  bool excluded = false;   // kept at 8-bit quantization
};
// Constraints by layer name; layers not named are free.
using Constraints = std::map<std::string, LayerConstraint>;

// The exact optimum under the budget (bytes of compressed weights). Throws lorq::Error naming both limits when the
// budget is outside [smallest, largest] achievable size (largest: every layer at its biggest option).
Allocation allocate(const CompressionAnalysis& analysis, int64_t budget_bytes, const Constraints& constraints = {});
BudgetAllocator make_allocator(const CompressionAnalysis& analysis, const Constraints& constraints = {});
// Every layer at Q(bits): the uniform per-row baseline at the same memory as an average of `bits`.
Allocation uniform_allocation(const CompressionAnalysis& analysis, int bits);

// Replaces every compressed layer's weight by its chosen W̃ (fake quantization / the factor product).
void apply_allocation(Model& model, const CompressionAnalysis& analysis, const Allocation& allocation);

}  // namespace lorq
