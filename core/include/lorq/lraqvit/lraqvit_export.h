#pragma once
// LRA-QViT's export: MLoRQ's format (lorq/io/export.h: bit-packed codes, per-row scales, low-rank factors), so
// `lorq eval --model DIR` and load_model() read it back, plus the per-token activation quantizer in the metadata
// ("lraqvit.act_bits", "lraqvit.act_mode"), which load_model reinstalls from the stored factors: the reloaded model
// computes bit for bit what the compressed model computed.
#include <string>
#include <vector>

#include "lorq/io/safetensors.h"
#include "lorq/lraqvit/method.h"
#include "lorq/models/model.h"

namespace lorq::lraqvit {

// `source_path`: the float model the result was made from (recorded with its checksum). `seen_images`: the
// calibration images, which `lorq eval` leaves out.
void export_lraqvit(const std::string& out_dir, const LraQvitResult& result, const std::string& source_path,
                    const std::vector<std::string>& seen_images);

// Called by load_model on every checkpoint: does nothing unless the file is an LRA-QViT export with activation
// quantization. Throws lorq::Error naming the file on a bad entry.
void install_exported_token_quantization(Model& model, const SafetensorsFile& file);

}  // namespace lorq::lraqvit
