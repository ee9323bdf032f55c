#pragma once
// timm's VisionTransformer (ViT, DeiT) in LibTorch. Tensor names are timm's checkpoint keys, so a timm
// safetensors file loads without renaming.
#include <map>
#include <memory>

#include "lorq/models/model.h"
#include "lorq/models/vit_config.h"

namespace lorq {

class VisionTransformer : public Model {
 public:
  // Takes every tensor of the checkpoint by name (float32, contiguous). Throws lorq::Error naming `source`
  // when a tensor is missing or has the wrong shape.
  VisionTransformer(VitConfig config, std::map<std::string, at::Tensor> tensors, const std::string& source);
  // A freshly initialised network (truncated-normal weights as in timm), for training from scratch.
  static std::unique_ptr<VisionTransformer> create_random(const VitConfig& config, uint64_t seed);

  const VitConfig& config() const { return config_; }

  TaskKind task() const override { return TaskKind::Classification; }
  std::string architecture() const override { return config_.architecture; }
  std::string family() const override;
  const Preprocessing& preprocessing() const override { return config_.preprocessing; }
  const std::vector<std::string>& label_names() const override { return config_.label_names; }
  int num_labels() const override { return config_.num_classes; }
  std::map<std::string, int64_t> dimensions() const override;
  std::string config_json() const override;
  std::unique_ptr<Model> clone() const override;
  std::vector<int64_t> readout_tokens(const std::string& layer, int64_t length) const override;

  int num_stages() const override { return static_cast<int>(blocks_.size()); }
  StageState embed(const at::Tensor& images) override;
  StageState run_stage(int stage, const StageState& x) override;
  ModelOutputs finish(const StageState& x) override;

  // Trainable parameters (for the demo trainer): every registered tensor.
  std::vector<at::Tensor> parameters() const;

 private:
  struct Linear {
    std::string name;
    at::Tensor weight, bias;
  };
  struct Norm {
    at::Tensor weight, bias;
  };
  // Activation point names, built once so the forward pass does not format strings.
  struct BlockPoints {
    std::string norm1_out, q, k, softmax, v, proj_in, norm2_out, fc2_in;
  };
  struct Block {
    Norm norm1, norm2;
    Linear qkv, proj, fc1, fc2;
    BlockPoints points;
  };

  void bias_added(const std::string& layer) override;
  at::Tensor attention(Block& b, const at::Tensor& x);
  void register_block_points(int i, Block& b);
  void bind(const std::string& key, at::Tensor* slot);

  VitConfig config_;
  at::Tensor patch_w_, patch_b_, cls_token_, pos_embed_;
  std::vector<Block> blocks_;
  Norm norm_, fc_norm_;
  Linear head_;
  std::string head_in_ = "head.in";
  std::map<std::string, at::Tensor> pending_;  // tensors not yet bound during construction
  std::string source_;
};

struct Architecture;
// The registry entry (registry.cpp lists it): timm `architecture` names vit_* / deit_*, or the tensor shapes.
Architecture vit_architecture();

}  // namespace lorq
