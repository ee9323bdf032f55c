#pragma once
// Calibration (spec §3) and the global error of one option (spec §6): a seeded subset of images, the float
// model's outputs on them, and every stage's input, cached so that one layer's effect is measured by re-running
// only the stages from that layer on.
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lorq/pipeline/candidates.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/common/progress.h"
#include "lorq/tasks/task.h"

namespace lorq {

struct CalibrationSettings {
  int images = 32;    // calibration images drawn from the set (fewer are used, with a warning, if fewer decode)
  uint64_t seed = 0;  // the draw is a seeded permutation of the set
  int batch = 32;
  // Memory for the float model's cached stage inputs. Stages beyond it are recomputed on demand from the nearest
  // kept one (in network order that costs one extra pass per stage), so 1024 images of a large model still fit.
  int64_t max_stage_bytes = int64_t(2) << 30;
};

struct Calibration {
  std::vector<std::string> files;     // the images used, in order
  std::vector<std::string> warnings;  // e.g. images that failed to decode
  at::Tensor images;                  // [N, C, H, W] preprocessed
  ModelOutputs reference;             // the float model's outputs, [N, ...] each
  // stage_inputs[s]: what stage s receives for all N images (ViT: [N, tokens, dim]), or empty when it did not fit
  // max_stage_bytes. Sized from the real stage states (a hierarchical encoder's grow and shrink).
  std::vector<StageState> stage_inputs;
  int batch = 32;

  // The input of `stage` for all N images: the kept state, or recomputed with `model`, which must still be the
  // float model (no overrides, original weights). The last recomputed stage is remembered, so asking for stages in
  // network order advances it one stage at a time. Not thread-safe.
  StageState stage_input(Model& model, int stage) const;

 private:
  mutable int streamed_stage_ = -1;
  mutable StageState streamed_;
};

Calibration calibrate(Model& model, const ImageSet& set, const CalibrationSettings& settings,
                      const JobControl& job = {});

// Network-output noise-to-signal ratio Σ mean((y − y_ref)²) / Σ mean(y_ref²) over the calibration batches with only
// `layer` replaced by W̃ (float model elsewhere), re-running only the stages from the layer's own. With several
// outputs, the task's weighted sum of per-output ratios (lorq/tasks/task.h, OutputError).
double output_nsr(Model& model, const Calibration& calib, const std::string& layer, const at::Tensor& W_tilde,
                  int batch = 32);

// output_nsr of several weights of one layer, measured together (see GlobalErrorSettings::max_pass_bytes): the same
// values up to float rounding; max_pass_bytes <= 0 measures each alone (exactly output_nsr).
std::vector<double> output_nsrs(Model& model, const Calibration& calib, const std::string& layer,
                                const std::vector<at::Tensor>& W_tildes, int batch = 32,
                                int64_t max_pass_bytes = int64_t(32) << 20);

struct GlobalErrorSettings {
  // Per factor-bit pair: measured ranks; the others are interpolated in Λ. The spec uses K = 5; 3 is this CPU's
  // default (DeiT-Tiny pipeline 4.0 min instead of 5.3; Spearman of the LFH estimate unchanged, 4-bit accuracy held).
  int anchors = 3;
  int batch = 32;
  // Instead of re-running the network, estimate each anchor's output NSR from the label-free Hessian:
  // E‖y − y_ref‖² ≈ Σ H ⊙ (W − W̃)² (Gauss-Newton), so e ≈ Σ H ⊙ δ² / (elements · mean(y_ref²)), elements = the
  // output's values per image (the class count for logits). No extra forward passes; layers without a real LFH
  // (convolutions) are still measured.
  bool estimate = false;
  // > 0: a layer's measured options run through the network together, each on its own copy of the calibration
  // batch (one pass of k·batch images instead of k passes), the copies' stage input bounded by this many bytes.
  // Off by default: on DeiT-Tiny it bought x0.87..x1.20 per layer on a loaded 2-core machine
  // (bench_global_error_batching), and the bigger GEMMs move the errors by float rounding (up to 7e-6 relative).
  int64_t max_pass_bytes = 0;
  // Calibrated estimates: measure fewer options and place the others at their LFH estimate times the measured/
  // estimated ratio of a measured neighbour. Per layer with an LFH: Q options up to `calibrate_above_bits` are
  // measured and the wider ones scaled by the widest measured one's ratio (their errors are small and the ratio
  // stable: on DeiT-Tiny Q6/Q8 from Q4 within x1.27 at the 90th percentile); of each factor-bit pair's anchors only
  // the middle rank is measured and the others scaled by its ratio (within x1.51). About 40 % of the forward
  // passes of measuring every anchor. Off: every anchor measured.
  bool calibrated = false;
  int calibrate_above_bits = 4;
};

// Fills option.error (and .measured) for every option of every layer: Q options and each bit pair's anchor ranks
// are measured (or estimated), the ranks between two anchors interpolated linearly in Λ. `lfh` is needed when
// settings.estimate is set. Progress counts layers.
void measure_global_errors(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                           const GlobalErrorSettings& settings, const JobControl& job = {},
                           const std::map<std::string, at::Tensor>* lfh = nullptr);

// An estimate of a layer's anchored options' errors: `anchored` indexes layer.options, W_tildes their weights.
using AnchorEstimateFn =
    std::function<std::vector<double>(const std::vector<size_t>& anchored, const std::vector<at::Tensor>& W_tildes)>;

// measure_global_errors on one layer: `estimate` (needs `lfh` to hold the layer) estimates its anchors from the LFH
// instead of measuring them, or with `estimate_anchors` where given; sets layer.errors_measured to !estimate.
// Returns the log line's detail ("error LO .. HI over K measured options").
std::string measure_layer_global_errors(Model& model, const Calibration& calib, LayerCandidates& layer,
                                        const GlobalErrorSettings& settings, bool estimate,
                                        const std::map<std::string, at::Tensor>* lfh = nullptr,
                                        const AnchorEstimateFn& estimate_anchors = {});

// measure_layer_global_errors in steps, so that a caller can run the forward passes of several measurements
// together (the cross-fit's two folds, pipeline/cross_fit.h): the plan says which options run through the network;
// finish_layer_measurement takes their errors and fills the layer as measure_layer_global_errors does.
struct LayerMeasurementPlan {
  std::vector<size_t> anchored;                 // options measured or estimated (indices into layer.options)
  std::vector<at::Tensor> W_tildes;             // their weights
  std::vector<std::vector<size_t>> groups;      // per factor-bit pair, its options by rank
  std::vector<std::vector<size_t>> anchors_of;  // per group, the anchors' positions in it
  bool estimate = false;                        // every anchor estimated: nothing runs
  bool calibrated = false;                      // GlobalErrorSettings::calibrated applies to this layer
  std::vector<int> source;                      // calibrated: per anchor, -1 (measured) or the anchor it scales from
  std::vector<at::Tensor> to_run() const;       // the weights whose errors are measured, in anchor order
};
LayerMeasurementPlan plan_layer_measurement(const Model& model, const LayerCandidates& layer,
                                            const GlobalErrorSettings& settings, bool estimate,
                                            const std::map<std::string, at::Tensor>* lfh = nullptr);
// `measured`: the output NSRs of plan.to_run() on `calib` (for an estimate plan, every anchor's estimate). Returns
// the log line's detail, as measure_layer_global_errors does.
std::string finish_layer_measurement(const Model& model, const Calibration& calib, LayerCandidates& layer,
                                     const LayerMeasurementPlan& plan, const std::vector<double>& measured,
                                     const std::map<std::string, at::Tensor>* lfh = nullptr);

// The range of a layer's measured (or estimated: option.measured) errors for the logs: "error LO .. HI over K HOW
// options".
std::string error_range_detail(const LayerCandidates& layer, const std::string& how);

// The Gauss-Newton estimate of one option's output error (see GlobalErrorSettings::estimate). The LFH's projections
// are scaled per output so that it estimates the task's weighted error in the units of its first error output
// (sensitivity.h); the normalisation here is that output's.
double estimated_nsr(const at::Tensor& W, const at::Tensor& W_tilde, const at::Tensor& lfh, const Calibration& calib,
                     const Task& task);

// The anchor positions round_half_even(i·(L−1)/(K−1)), i = 0..K−1 (all positions when L ≤ K).
std::vector<size_t> anchor_positions(size_t L, size_t K);

}  // namespace lorq
