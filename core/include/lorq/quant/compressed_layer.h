#pragma once
// A layer's final compressed form (spec §9): the integer codes of W (Q) or of the two factors A_r, B_r (LR), their
// per-row quantizers, and whether the codes are nearest rounding or learned (adaptive rounding, spec §10). This is
// what apply, adaptive rounding and export share: the model runs on dequantized_weight(), the export writes the codes.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/pipeline/candidates.h"
#include "lorq/models/model.h"
#include "lorq/quant/quantizer.h"

namespace lorq {

struct CompressionAnalysis;
struct Allocation;

// One per-row quantized tensor [rows, cols].
struct QuantizedTensor {
  at::Tensor values;      // float32 source (W, A_r or B_r); the codes were rounded from values / scale
  RowQuantParams params;  // per-row scale and zero-point, bits
  at::Tensor codes;       // uint8 [rows, cols]: nearest rounding of values until adaptive rounding replaces them
  // The values are error-compensated (GPTQ), not the float weight: adaptive rounding then starts from the codes
  // (rounding_layer.cpp, initial_alpha), since the compensated values themselves are a poor continuous weight.
  bool compensated = false;
  at::Tensor dequantized() const { return dequantize_codes(codes, params); }
  // Nearest rounding: codes = quantize_rows_to_codes(values, params).
  static QuantizedTensor nearest(const at::Tensor& values, const RowQuantParams& params);
};

enum class LayerForm { Float, Quant, LowRank };

struct CompressedLayer {
  std::string layer;
  LayerForm form = LayerForm::Quant;
  LayerOption option;      // the allocation's choice (kind, bits, rank, bytes, predicted error); unused for Float
  QuantizedTensor weight;  // Quant: W [m, n]
  QuantizedTensor a, b;    // LowRank: A_r [m, r], B_r [r, n]
  bool rounding_learned = false;
  // W̃ [m, n]: dequantized W, or Ã_r·B̃_r (contiguous factors, so the export's decode gives the same bits).
  // Float layers have no W̃ (returns an undefined tensor; the model keeps its own weight).
  at::Tensor dequantized_weight() const;
};

// The allocation's layers with the analysis' own (stage-1) quantizers: the same W̃ the global error measured.
// choice −1 (kept in float) gives a Float layer.
std::vector<CompressedLayer> compress_layers(const Model& model, const CompressionAnalysis& analysis,
                                             const Allocation& allocation);

// Spec §9: the allocation's layers refitted to the model's *current* weights with `lfh` (the LFH of the current
// model): Q(b) by a per-row E2 search on W; LR by a fresh weighted SVD with `lfh`, then a per-row E3 search on A_r
// (float B_r as complement) and E1 on B_r, for the chosen rank only. Options keep the allocation's bits and ranks.
// With settings.quantizer == Gptq and `input_moments` (layer -> XᵀX of its current inputs), the codes are
// error-compensated (B̃_r on x, then Ã_r on B̃_r x; layers without a moment are rounded to nearest).
std::vector<CompressedLayer> refit_layers(const Model& model, const CompressionAnalysis& analysis,
                                          const Allocation& allocation, const std::map<std::string, at::Tensor>& lfh,
                                          const CandidateSettings& settings = {},
                                          const std::map<std::string, at::Tensor>* input_moments = nullptr);

// Sets every non-Float layer's weight to its W̃.
void apply_compressed_layers(Model& model, const std::vector<CompressedLayer>& layers);

}  // namespace lorq
