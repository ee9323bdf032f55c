#pragma once
// The adaptive-rounding checkpoint file (internal to round_layers): finished layers' codes and results in one
// safetensors file, rewritten atomically after every layer, keyed so that a stale file is never applied.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/quant/adaptive_rounding.h"

namespace lorq {

// Hash of everything the learned codes depend on: the model's tensors, the images, every layer's choice,
// quantizers and float values, and the settings that change the result.
std::string rounding_checkpoint_key(const Model& model, const std::vector<CompressedLayer>& layers,
                                    const at::Tensor& images, const RoundingSettings& s);

// Writes every layer in `finished` (codes from `layers`) with its result.
void save_rounding_checkpoint(const std::string& path, const std::string& key,
                              const std::vector<CompressedLayer>& layers,
                              const std::map<std::string, LayerRoundingResult>& finished);

// Restores the finished layers' codes into `layers` (rounding_learned as recorded) and returns their results.
// A missing file gives nothing; a stale or unreadable one gives nothing and a warning.
std::vector<LayerRoundingResult> load_rounding_checkpoint(const std::string& path, const std::string& key,
                                                          std::vector<CompressedLayer>& layers,
                                                          std::vector<std::string>* warnings);

}  // namespace lorq
