#pragma once
// The model registry: every architecture says how to recognise its checkpoint and how to build itself. load_model
// asks it in the order of precedence the checkpoint formats define:
//   1. a Hugging Face config.json's "model_type" ("yolos", "segformer", ...);
//   2. a timm config.json's "architecture" ("deit_tiny_patch16_224");
//   3. the tensor shapes (a bare safetensors file, or a config that names neither).
// The list is explicit (registry.cpp), not self-registering, so nothing depends on static-initialisation order or on
// the linker keeping an unreferenced object file.
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lorq/models/model.h"

namespace lorq {

using TensorShapes = std::map<std::string, std::vector<int64_t>>;

// What the loader knows about a checkpoint before choosing its architecture.
struct CheckpointInfo {
  ModelFiles files;
  std::string config_text;        // config.json's text ("" when there is none)
  std::string model_type;         // Hugging Face "model_type" ("" when absent)
  std::string timm_architecture;  // timm "architecture" ("" when absent)
  TensorShapes shapes;            // every tensor of the weights file
};

struct Architecture {
  std::string name;                                   // shown in messages: "timm VisionTransformer (ViT, DeiT)"
  std::vector<std::string> model_types;               // Hugging Face model_type values it builds
  std::function<bool(const std::string&)> timm_name;  // whether a timm architecture name is one of its variants
  std::function<bool(const TensorShapes&)> shapes;    // whether the tensors look like its checkpoints
  // Builds the model from the checkpoint's float32 tensors (checkpoint names). Throws lorq::Error naming the file.
  std::function<std::unique_ptr<Model>(const CheckpointInfo&, std::map<std::string, at::Tensor>)> build;
};

// Every supported architecture, in the order they are tried.
const std::vector<Architecture>& architectures();
// The architecture of a checkpoint. Throws lorq::Error naming the file, what it found and the supported list.
const Architecture& recognise_architecture(const CheckpointInfo& info);
// "timm VisionTransformer (ViT, DeiT), ..." for messages.
std::string supported_architectures();

}  // namespace lorq
