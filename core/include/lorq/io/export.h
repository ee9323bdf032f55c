#pragma once
// Export of a compressed model (spec §9): an output folder holding
//   lorq-config.json        versioned: source model + checksum, budget, every layer's choice, totals;
//   compressed.safetensors  integer codes (one byte per code, bit width in the metadata), per-row scales and
//                           zero-points, the two factors of low-rank layers, and every uncompressed tensor;
//   config.json             the model config, so `lorq eval --model OUTDIR` loads it back.
// Each file is written under a temporary name and renamed into place.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "lorq/quant/activation_quant.h"
#include "lorq/pipeline/compress.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/common/file_util.h"
#include "lorq/models/model.h"

namespace lorq {

constexpr int kExportFormatVersion = 1;

// `model` holds the uncompressed weights (the analysis' source); `source_path` is recorded with its checksum.
// `layers`: the final compressed layers (refitted, learned rounding); empty = compress_layers(model, analysis,
// allocation), the stage-1 quantizers.
void export_compressed(const std::string& out_dir, const Model& model, const std::string& source_path,
                       const CompressionAnalysis& analysis, const Allocation& allocation,
                       const std::vector<CompressedLayer>& layers = {},
                       const ActivationQuantization* activations = nullptr);

// Activation quantizers in a compressed checkpoint: tensors "activation.<point>.scale|.zero_point" with the type
// and bits in the metadata. take_activation_quantizers() removes them from `tensors` (empty result when none);
// throws lorq::Error naming `source` on an inconsistent entry.
ActivationQuantization take_activation_quantizers(std::map<std::string, at::Tensor>& tensors,
                                                  const std::map<std::string, std::string>& metadata,
                                                  const std::string& source);

// Replaces the code/scale/zero-point groups of a compressed checkpoint by the float weights they decode to
// (exactly what the in-memory compressed model uses). Tensors of ordinary checkpoints pass through unchanged.
// Throws lorq::Error naming `source` on an inconsistent group.
void decode_compressed_tensors(std::map<std::string, at::Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata, const std::string& source);

}  // namespace lorq
