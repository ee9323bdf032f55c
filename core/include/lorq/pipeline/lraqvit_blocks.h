#pragma once
// LRA-QViT's building blocks inside MLoRQ (issue 12): options of the final model (final_model.h), applied after
// the allocation and before adaptive rounding. Each keeps the allocation's choices (bits, ranks, bytes) and the
// export format; only the values the final layers are quantized from, the float biases/norms and the activation
// quantizers change.
//   WADS (lraqvit/wads.h) on the float model, before the final layers: learned per-channel scales folded into the
//       LayerNorms (÷) and their consumers' columns (×), and into qkv's value rows (÷) and proj's columns (×). The
//       final layers are then refitted to the scaled weights. Factor bottlenecks are not scaled: MLoRQ's factors
//       come from the refit's weighted SVD after the scaling, and a bottleneck scale would have to be folded into
//       factors that do not exist yet.
//   recovery (lraqvit/distill.h) after the final layers: the compressed model (quantized weights applied) is
//       distilled against the float model, training only the float biases and LayerNorm affines. [Why not the
//       factors or a delta on them: every weight of an MLoRQ model is stored as codes on a per-row grid chosen by
//       the allocator; a small float delta rounds back to the same codes (the deltas a calibration set supports
//       are far below half a grid step at 3-4 bits), so only the float parameters carry what the recovery learns
//       into the export, bit for bit, at no cost in bytes.]
//   per-token activations (lraqvit/token_quant.h) instead of §8's static quantizers: every linear input but the
//       image, and every low-rank layer's bottleneck, quantized with one dynamic scale per token row. Exported with
//       LRA-QViT's metadata, so load_model reinstalls them (bit-exact reload).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/lraqvit/distill.h"
#include "lorq/lraqvit/token_quant.h"
#include "lorq/lraqvit/wads.h"
#include "lorq/models/model.h"
#include "lorq/quant/compressed_layer.h"

namespace lorq {

struct LraQvitBlockSettings {
  int per_token_bits = 0;  // 0: off; 2..8: per-token activations (replaces the static ones)
  bool wads = false;
  int wads_steps = 100;      // Adam steps per point (lraqvit/wads.h defaults otherwise)
  int wads_weight_bits = 8;  // the weight width WADS's objective assumes (the allocation's average, rounded)
  int wads_act_bits = 8;     // the per-token width its objective assumes
  int recovery_steps = 0;    // 0: off
  int recovery_batch = 8;
  double recovery_lr = 1e-4;
  std::string recovery_checkpoint;  // "" = none; a run resumes from a matching one
  bool any() const { return per_token_bits > 0 || wads || recovery_steps > 0; }
};

struct LraQvitBlocksReport {
  std::vector<lraqvit::WadsPointResult> wads;
  lraqvit::DistillReport recovery;
  double recovery_loss_before = 0, recovery_loss_after = 0;  // the distillation loss on all recovery images
};

// WADS on `model` (float weights; changed in place, its function unchanged up to float rounding). Also rescales
// `lfh` (layer -> [out, in] diagonal Hessian) to the scaled weights: a weight scaled by c has 1/c² the sensitivity.
std::vector<lraqvit::WadsPointResult> apply_wads_before_final_layers(Model& model, const at::Tensor& images,
                                                                     const LraQvitBlockSettings& settings,
                                                                     std::map<std::string, at::Tensor>* lfh,
                                                                     const JobControl& job = {});

// Recovery: distils `model` with `layers` applied against `teacher` on `images`, then writes the trained biases and
// norms into `model` (its weights stay the float ones, for the rounding that may follow). With per_token_bits the
// student runs per-token activations (straight-through gradients) while training.
void recover_biases_and_norms(Model& model, const std::vector<CompressedLayer>& layers, const Model& teacher,
                              const at::Tensor& images, const LraQvitBlockSettings& settings,
                              LraQvitBlocksReport* report, const JobControl& job = {});

// The per-token quantizers on a model whose layers are applied (apply_compressed_layers): low-rank layers run their
// two dequantized factors with the bottleneck quantized too.
void install_per_token_activations(Model& model, const std::vector<CompressedLayer>& layers, int bits);

// The export metadata that makes load_model reinstall them (lraqvit_export.h); empty when per_token_bits is 0.
std::map<std::string, std::string> lraqvit_blocks_metadata(const LraQvitBlockSettings& settings);

}  // namespace lorq
