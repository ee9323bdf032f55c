#pragma once
// LRA-QViT end to end (spec §1): RB-LRA -> recovery by distillation -> merge -> WADS (with activation quantization)
// -> per-channel weight quantization and per-token activation quantization. The result is MLoRQ's currency:
// one CompressedLayer per linear layer (factorized layers LowRank at (B, B) bits, every other layer Quant at B bits,
// the patch embedding and the head included), so it exports, reloads and evaluates like an MLoRQ result.
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/lraqvit/distill.h"
#include "lorq/lraqvit/rb_lra.h"
#include "lorq/lraqvit/token_quant.h"
#include "lorq/lraqvit/wads.h"
#include "lorq/quant/compressed_layer.h"

namespace lorq::lraqvit {

struct LraQvitSettings {
  RbLraSettings lra;
  bool recover = true;  // distillation after the truncation
  DistillSettings distill;
  std::string distill_checkpoint;  // "" = none
  bool wads = true;                // only with activation quantization (weight-only gains nothing, spec §4.4)
  WadsSettings wads_settings;      // its bits are set from weight_bits / activations
  int weight_bits = 8;             // per-channel, every linear layer and both factors
  int act_bits = 8;                // per-token on every linear and factor input but the image; 0: weights only
  TokenQuantMode act_mode = TokenQuantMode::Symmetric;
};

struct LraQvitResult {
  std::unique_ptr<Model> model;         // the compressed model, ready to evaluate (token quantizers installed)
  std::vector<CompressedLayer> layers;  // one per model.linear_layers(), in order: what the export writes
  TokenQuantizer activations;           // bits 0: weights only
  int64_t weight_bytes = 0;             // codes of every layer (the budget's count, as MLoRQ's)
  int64_t compressible_params = 0;
  double avg_bits() const { return compressible_params ? 8.0 * weight_bytes / compressible_params : 0; }
  RankSummary ranks;
  DistillReport distill;
  std::vector<WadsPointResult> wads;
  std::vector<std::pair<std::string, double>> stage_seconds;
};

// The weight bytes run_lraqvit gives `model` at `weight_bits` (the layers `lra` selects factorized at their ranks,
// every other linear layer dense), without computing anything: how a comparison matches LRA-QViT to a budget.
int64_t lraqvit_weight_bytes(const Model& model, const RbLraSettings& lra, int weight_bits);

// `calib_images` [N, C, H, W] preprocessed; `labels` int64 [N] (−1 unlabeled) or undefined. `float_model` is not
// changed. Progress per stage ("rb-lra", "distillation", "wads", "quantization"); throws Cancelled.
LraQvitResult run_lraqvit(const Model& float_model, const at::Tensor& calib_images, const at::Tensor& labels,
                          const LraQvitSettings& settings, const JobControl& job = {});

// Sets every non-Float layer's W̃ on `model` and, with q.bits > 0, installs per-token activation quantization as
// linear overrides: a LowRank layer runs Ã·Q(B̃·Q(x)) + b, any other layer W̃·Q(x) + b, the patch embedding W̃x + b.
void apply_lraqvit_layers(Model& model, const std::vector<CompressedLayer>& layers, const TokenQuantizer& q);

// The overrides of apply_lraqvit_layers from the dequantized factors (Ã [m, r], B̃ [r, n]) of the low-rank layers;
// every other layer runs on its current weight (the export loader's path: the same floats, so a bit-exact reload).
void install_token_quantization(Model& model, const std::map<std::string, std::pair<at::Tensor, at::Tensor>>& factors,
                                const TokenQuantizer& q);

}  // namespace lorq::lraqvit
