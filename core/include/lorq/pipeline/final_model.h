#pragma once
// After the budget allocation (spec §1 steps 8–14): the compressed model that is evaluated and exported.
//   fresh float model
//   -> activation quantization: range calibration, LayerNorm folding, ridge correction   (§8; only when enabled)
//   -> the LFH of the rebuilt model and the final per-layer compression (refit, §9)
//   -> low-rank-aware adaptive rounding                                                  (§10; only when enabled)
//   -> compressed weights applied, activation quantizers switched on                     (§11)
// Weight-only without rounding, the analysis' own quantizers are used unless `refit` is set (the LFH is then the
// analysis' one, so only low-rank factors change).
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "lorq/io/images.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/lraqvit_blocks.h"
#include "lorq/quant/activation_quant.h"
#include "lorq/quant/adaptive_rounding.h"
#include "lorq/quant/compressed_layer.h"

namespace lorq {

// The images the final stages (activation ranges, LFH, rounding) use: the analysis' calibration images first, then
// further images of `set` in its order until there are `count`; held_out: every other image of `set`, the ones an
// evaluation may score on.
struct FinalImages {
  ImageSet train, held_out;
};
FinalImages split_final_images(const ImageSet& set, const std::vector<std::string>& calibration_files, size_t count);

struct FinalModelSettings {
  ActQuantSettings activations;  // .enabled switches activation quantization on (off: weight-only)
  bool refit = false;            // §9 refit of weight-only layers (always done with activation quantization)
  // The refit's rounding (the analysis' codes are used as they are otherwise): Gptq compensates through the input
  // moments of the rebuilt model, measured with its activation quantizers on (what the layers will see).
  Quantizer quantizer = Quantizer::Nearest;
  GptqSettings gptq;             // the refit's compensation (the analysis' damping)
  bool round = false;            // §10 adaptive rounding
  RoundingSettings rounding;
  LfhOptions lfh;  // for the LFH of the rebuilt model (activation quantization only)
  int lfh_images = 8;
  std::string rounding_checkpoint;  // file for finished layers' codes ("" = none): an interrupted run resumes
  // A cancelled rounding keeps the layers learned so far (the others keep nearest rounding) and the final model is
  // still built from them, instead of throwing Cancelled: FinalModel::rounding_cancelled says it happened.
  bool keep_learned_on_cancel = false;
  RoundingStepFn on_rounding_step;  // every optimizer step (live loss curves)
  // LRA-QViT's blocks (lraqvit_blocks.h): WADS before the final layers, recovery after them, both before rounding;
  // per-token activations replace `activations` (which must then be disabled).
  LraQvitBlockSettings blocks;
  at::Tensor recovery_images;  // the recovery's images [N, C, H, W] (undefined: `images`)
};

struct FinalModel {
  std::unique_ptr<Model> model;         // compressed weights applied, activation quantizers on when enabled
  std::vector<CompressedLayer> layers;  // what the export writes
  bool activations_quantized = false;
  ActivationQuantization activations;
  RoundingReport rounding;
  bool rounding_cancelled = false;  // keep_learned_on_cancel: the rounding was cancelled part-way
  int learned_layers = 0;           // layers whose codes come from adaptive rounding
  int compressed_layers = 0;        // layers not kept in float
  std::vector<std::pair<std::string, double>> stage_seconds;
  LraQvitBlockSettings blocks;  // as built (per_token_bits > 0: per-token quantizers installed)
  LraQvitBlocksReport blocks_report;
};

// `model_path`: the float model the analysis was made on. `images`: preprocessed calibration images [N, C, H, W]
// (the first ones are used for activation ranges, the LFH and rounding). Progress per stage; throws Cancelled.
FinalModel build_final_model(const Model& float_model, const CompressionAnalysis& analysis,
                             const Allocation& allocation, const at::Tensor& images, const FinalModelSettings& s,
                             const JobControl& job = {});

}  // namespace lorq
