#pragma once
// `lorq export-timm`: a lorq export as an ordinary timm checkpoint (model.safetensors + config.json) holding the
// dequantized float32 weights (low-rank layers multiplied back out), for evaluation in other pipelines. Not
// smaller than the float model: it is the compressed model's function, not its storage.
#include <string>

namespace lorq {

// Loads `export_dir` exactly as `lorq eval` does and writes out_dir/model.safetensors and out_dir/config.json.
// Throws lorq::Error naming the file on a bad export, or when the export quantizes activations (its function
// then depends on the quantizers, which a float checkpoint cannot carry).
void export_timm_checkpoint(const std::string& export_dir, const std::string& out_dir);

}  // namespace lorq
