#pragma once
// Low-rank-aware adaptive rounding (spec §10, step 13 of MLoRQ): AdaRound extended to the two factors of a low-rank
// layer. Layers are processed in network order; each learns, per element of its quantized tensor(s), whether to
// round down or up, so that the layer's output on the *compressed* network's input matches the *float* network's
// output. The quantizers (Δ, z, bits) and the float values stay fixed; only the integer codes change.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/models/model.h"
#include "lorq/quant/augmented_views.h"
#include "lorq/quant/compressed_layer.h"

namespace lorq {

enum class RoundingScope { Layer, Segment };

struct RoundingSettings {
  // Defaults: sized for a 2-core CPU (whole DeiT-Tiny in well under 15 minutes); spec_defaults() gives the spec's.
  int iterations = 500;       // optimizer steps per rounding problem: a block or a layer (spec: 20000 per layer)
  int images = 128;           // images whose activations train each layer (spec: 1024), the first of the tensor
  int batch = 32;             // images per forward pass while collecting a layer's data (memory, not learning)
  // Layer scope: tokens kept per image and layer besides the readout tokens, drawn at random (0: all; spec: all 197).
  // 256 keeps all of DeiT's 196 patches and bounds a detector's long sequences. 48 overfitted: DeiT-Tiny W3 (gptq,
  // readout share 0.5, 372 held-out images) ended at output NSR 0.469 with 48 and 0.417 with all (0.454 without
  // rounding).
  int tokens_per_image = 256;
  int rows_per_step = 1024;   // layer scope: token rows per optimizer step (spec: 32 images x 197 tokens = 6304)
  double lr = 0.3;            // RAdam learning rate (spec §10.3)
  double reg_factor = 0.3;    // λ_r, applied to each tensor's mean regularizer
  double warmup = 0.2;        // fraction of iterations at β_start (the regularizer stays on, spec §10.3)
  double beta_start = 20, beta_end = 2;
  // [G] The share of each step's reconstruction loss given to the rows of the readout tokens (Model::readout_tokens:
  // DeiT's class token, YOLOS's detection tokens), the rest to the other sampled tokens; layers without readout
  // tokens use plain MSE. The spec's plain MSE over all tokens gives DeiT's class token 1/197 of the loss, and at
  // 3 bits the learned rounding traded it away (its error rose in the last blocks' MLPs while the patch tokens'
  // fell): on DeiT-Tiny W3 (gptq, all tokens, 372 held-out images) the model's output NSR rose from 0.454 without
  // rounding to 0.509; with 0.5 it falls to 0.417 (0.8: 0.430). 0: the spec's loss.
  double readout_share = 0.5;
  // Augmented copies of each image added to the rounding set (random resized crops and flips, augmented_views.h);
  // the readout loss then has (1 + augmented_views) rows per image instead of one. The spec rounds on 1024
  // augmented images alone (§3); here the originals stay and the copies come on top.
  int augmented_views = 3;
  AugmentSettings augment;
  // [G] What one rounding problem covers: each layer alone (spec §10: its output on the compressed input against the
  // float output), or all compressed layers of a segment (a transformer block) together against the segment's float
  // output, so that the layers' errors may cancel inside the block (BRECQ-style block reconstruction). On DeiT-Tiny
  // W3 (gptq, 372 held-out images, float 77.42 %) layer by layer reached top-1 70.97 % (output NSR 0.429), blocks
  // 74.19 % (NSR 0.235; 71.51 % and 0.454 unrounded), in about the same time.
  RoundingScope scope = RoundingScope::Segment;
  int block_images_per_step = 8;  // images (all their tokens) per step with RoundingScope::Segment
  double early_stop_loss = 1e-8;  // stop a layer when the total loss falls below this
  uint64_t seed = 0;              // token draws and step sampling
  // [G] Keep nearest rounding for a layer whose learned hard rounding reconstructs its data worse (only possible
  // when training is cut short); the spec always takes the learned one.
  bool keep_nearest_if_worse = true;
  int record_every = 1;  // keep every n-th iteration's losses in the report (the GUI's loss curve)

  // The spec's GPU-scale settings (§12): 20000 iterations, 1024 images, 32 images x all tokens per step, plain MSE.
  static RoundingSettings spec_defaults();
};

// One optimizer step of one layer, for live plots.
struct RoundingStep {
  int layer_index = 0;  // among the layers being rounded (0-based): the first of the group
  int layers = 0;       // how many are rounded in this run
  int group = 1;        // layers learned together by this step (RoundingScope::Segment), from layer_index on
  std::string layer;    // a group's common name prefix ("blocks.3")
  int iteration = 0, iterations = 0;
  double reconstruction = 0;  // mean((ŷ − Y_fp)²) of this step's rows (readout rows weighted: readout_share)
  double regularizer = 0;     // λ_r · Σ_V mean(1 − |2h(α_V) − 1|^β)
  double beta = 0;
};
using RoundingStepFn = std::function<void(const RoundingStep&)>;

struct LayerRoundingResult {
  std::string layer;
  int iterations = 0;                              // steps run (fewer on early stop)
  // The reconstruction loss (rounding::reconstruction_loss, or segment_loss for a group) at start and with the
  // learned hard rounding. Layers learned together share their group's; sum loss / group to count it once.
  double nearest_error = 0;
  double learned_error = 0;
  int group = 1;  // layers learned together (RoundingScope::Segment), this one among them
  double flipped_fraction = 0;                     // codes that differ from nearest rounding
  bool kept_nearest = false;                       // learned rounding was worse and keep_nearest_if_worse held
  bool from_checkpoint = false;                    // loaded, not trained in this run
  double seconds = 0;                              // data collection and training
  double collect_seconds = 0;                      // of which collecting its input rows (compressed pass)
  std::vector<float> reconstruction, regularizer;  // every record_every-th step
};

struct RoundingReport {
  std::vector<LayerRoundingResult> layers;  // the layers finished, in order (Float layers are not listed)
  std::vector<std::string> warnings;        // e.g. an ignored checkpoint
  double seconds = 0;
};

// Where finished layers' codes are saved (after each layer, atomically) so that an interrupted run resumes. The key
// covers the model's tensors, the images, every layer's quantizers, values and choice, and the settings; a file with
// another key (stale) or that cannot be read is ignored with a warning and overwritten.
struct RoundingCheckpoint {
  std::string path;  // e.g. "<cache>/rounding.safetensors"; its folder must exist
};

// Learns the rounding of every non-Float layer of `layers` (in model.linear_layers() order, one per layer, as
// compress_layers/refit_layers return them) on `images` [N, C, H, W] (preprocessed; the first settings.images
// are used). `model` must hold the float weights the layers were compressed from; it is used as the float
// reference and is left unchanged (no weight is replaced; overrides and observers are cleared on return). Apply
// the result with apply_compressed_layers().
//
// Finished layers get their learned codes and rounding_learned = true (unless kept_nearest). On cancellation
// (Cancelled is thrown between iterations) or any error, the layers finished so far keep their learned codes,
// the current and later layers keep nearest rounding, and the checkpoint holds every finished layer. Layers that
// already have rounding_learned on entry are kept as they are (calling again after a cancel continues the run).
// The first `settings.images` images are used, followed by their augmented copies (augmented_views).
// With RoundingScope::Segment (the default) the layers of one segment (embedding, block, head) are learned and
// checkpointed together (learn_segment); a segment's layers that are already learned keep their codes meanwhile.
// Deviations from the spec: the segment scope, the original images kept beside their augmented copies, token rows
// subsampled (layer scope), the readout tokens' rows weighted (readout_share), and learned codes that reconstruct
// worse than nearest are not taken (keep_nearest_if_worse).
// Progress: stage "rounding", done/total in layers, detail "layer i/n NAME it k/K rec … reg …", or for a segment's
// layers together "layers i-j/n PREFIX it k/K rec … reg …" (PREFIX: their common name prefix, "blocks.3").
RoundingReport round_layers(Model& model, std::vector<CompressedLayer>& layers, const at::Tensor& images,
                            const RoundingSettings& settings, const JobControl& job = {},
                            RoundingCheckpoint* checkpoint = nullptr, const RoundingStepFn& on_step = {});

// The building blocks (spec §10.1), exposed for tests and for other rounding schemes.
namespace rounding {

constexpr double kGamma = -0.1, kZeta = 1.1, kEpsilon = 1e-8;

// h(α) = clip(σ(α)·(ζ−γ) + γ, 0, 1).
at::Tensor rectified_sigmoid(const at::Tensor& alpha);
// How far from 0 or 1 the start of compensated values puts h (see initial_alpha). Close to 0 or 1 the rectified
// sigmoid is nearly flat and nothing moves (0.05: no code flipped in 300 steps on random layers); 0.25 leaves the
// soft weight a quarter step from the codes and learns (tests/quant/test_rounding_start.cpp).
constexpr double kCodeStartMargin = 0.25;
// α with h(α) = frac(V/(Δ+ε)): the hard rounding at init is nearest rounding (ties and the ε aside). For
// compensated values (q.compensated), h(α) = 1 − kCodeStartMargin where the code is ⌊V/(Δ+ε)⌋ + 1 and
// kCodeStartMargin where it is ⌊V/(Δ+ε)⌋: hard rounding at init gives the codes, the soft weight is within
// kCodeStartMargin·Δ of them.
at::Tensor initial_alpha(const QuantizedTensor& q);
// Δ·(clipSTE(⌊V/(Δ+ε)⌋ + h(α) + z, 0, 2^b−1) − z): differentiable in α; the clip passes gradients through.
at::Tensor soft_dequantized(const QuantizedTensor& q, const at::Tensor& alpha);
// uint8 codes clip(⌊V/(Δ+ε)⌋ + 𝟙[α ≥ 0] + z, 0, 2^b−1).
at::Tensor hard_codes(const QuantizedTensor& q, const at::Tensor& alpha);
// mean(1 − |2h(α) − 1|^β): 0 when every h is 0 or 1.
at::Tensor regularizer(const at::Tensor& alpha, double beta);
// β at iteration t of T: beta_start during the warm-up, then linear down to beta_end.
double beta_at(int64_t t, int64_t T, const RoundingSettings& s);

// One layer's training rows: inputs [R, in] and float targets [R, out] (including the bias).
struct LayerRoundingData {
  at::Tensor X, Y;                  // the sampled tokens' rows
  at::Tensor readout_X, readout_Y;  // the readout tokens' rows (RoundingSettings::readout_share), or undefined
};

// Trains one layer's rounding on `data`; `bias` may be undefined. Replaces the layer's codes (see round_layers).
// Exposed so tests can train a layer on chosen data.
LayerRoundingResult learn_layer(CompressedLayer& layer, const at::Tensor& bias, const LayerRoundingData& data,
                                const RoundingSettings& s, const JobControl& job = {},
                                const std::function<void(int, double, double, double)>& on_step = {});
// The same without readout rows.
LayerRoundingResult learn_layer(CompressedLayer& layer, const at::Tensor& bias, const at::Tensor& X,
                                const at::Tensor& Y, const RoundingSettings& s, const JobControl& job = {},
                                const std::function<void(int, double, double, double)>& on_step = {});

// mean((X W̃ᵀ + b − Y)²) of the layer's current codes, in row chunks (no autograd).
double reconstruction_error(const CompressedLayer& layer, const at::Tensor& bias, const at::Tensor& X,
                            const at::Tensor& Y);
// What training minimises, without the regularizer: (1 − share)·error(X, Y) + share·error(readout rows), share =
// readout_share where the data has readout rows and 0 otherwise.
double reconstruction_loss(const CompressedLayer& layer, const at::Tensor& bias, const LayerRoundingData& data,
                           double readout_share);

// One segment's data for joint rounding (RoundingScope::Segment): its input from the compressed network and its
// output from the float network, for every image, and the readout positions of its output tokens (may be empty).
struct SegmentRoundingData {
  StageState input, target;
  std::vector<int64_t> readout;
};
using SegmentFn = std::function<StageState(const StageState&)>;

// Trains the rounding of `layers` (all run by `run`, given their biases) together, so that the segment's output on
// the compressed input matches the float output: each step runs `run` on block_images_per_step random images with
// the layers' soft weights (through the model's linear overrides, cleared on return) and minimises the output's
// mean squared error, readout_share of it on the readout tokens' rows, plus each tensor's regularizer. One result
// per layer, all carrying the segment's loss. Replaces the layers' codes like learn_layer.
std::vector<LayerRoundingResult> learn_segment(Model& model, const SegmentFn& run,
                                               const std::vector<CompressedLayer*>& layers,
                                               const SegmentRoundingData& data, const RoundingSettings& s,
                                               const JobControl& job = {},
                                               const std::function<void(int, double, double, double)>& on_step = {});

// The segment loss of the layers' current codes over every image of `data`, in batches of s.batch (no autograd).
double segment_loss(Model& model, const SegmentFn& run, const std::vector<CompressedLayer*>& layers,
                    const SegmentRoundingData& data, const RoundingSettings& s);

}  // namespace rounding

}  // namespace lorq
