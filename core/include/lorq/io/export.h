#pragma once
// Export of a compressed model (spec §9): an output folder holding
//   lorq-config.json        versioned: source model + checksum, budget, every layer's choice, totals;
//   compressed.safetensors  integer codes bit-packed at their bit width (format version 2, lorq/io/packed_export.h),
//                           per-row scales and zero-points, the two factors of low-rank layers, and every
//                           uncompressed tensor;
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
#include "lorq/io/packed_export.h"
#include "lorq/io/safetensors.h"

namespace lorq {

// `model` holds the uncompressed weights (the analysis' source); `source_path` is recorded with its checksum.
// `layers`: the final compressed layers (refitted, learned rounding); empty = compress_layers(model, analysis,
// allocation), the stage-1 quantizers.
// `seen_images`: the images the compressed model was calibrated (and rounded) on, recorded as
// "calibration_images" so that `lorq eval` can leave them out and reproduce the accuracy the compression reported.
// `method_metadata`: extra entries for compressed.safetensors' metadata (also listed under "method" in
// lorq-config.json), e.g. LRA-QViT's per-token activation quantization, which load_model reinstalls.
void export_compressed(const std::string& out_dir, const Model& model, const std::string& source_path,
                       const CompressionAnalysis& analysis, const Allocation& allocation,
                       const std::vector<CompressedLayer>& layers = {},
                       const ActivationQuantization* activations = nullptr,
                       const std::vector<std::string>& seen_images = {},
                       const std::map<std::string, std::string>& method_metadata = {});

// The images an export records as its calibration images (canonical paths; empty for other models or older
// exports). `model_path` is what load_model takes.
std::vector<std::string> export_calibration_images(const std::string& model_path);

// Activation quantizers in a compressed checkpoint: tensors "activation.<point>.scale|.zero_point" with the type
// and bits in the metadata. take_activation_quantizers() removes them from `tensors` (empty result when none);
// throws lorq::Error naming `source` on an inconsistent entry.
ActivationQuantization take_activation_quantizers(std::map<std::string, at::Tensor>& tensors,
                                                  const std::map<std::string, std::string>& metadata,
                                                  const std::string& source);

// Replaces the code/scale/zero-point groups of a compressed checkpoint (`tensors` read from `file`) by the float
// weights they decode to (exactly what the in-memory compressed model uses). Reads format versions 1 (one byte
// per code) and 2 (bit-packed). Tensors of ordinary checkpoints pass through unchanged. Throws lorq::Error naming
// the file on an inconsistent group or an unknown format version.
void decode_compressed_tensors(std::map<std::string, at::Tensor>& tensors, const SafetensorsFile& file);

}  // namespace lorq
