#pragma once
// Hugging Face SegformerForSemanticSegmentation (MiT encoder + all-MLP decode head) in LibTorch. Tensor names are
// the Hugging Face state_dict keys, so a hub checkpoint (config.json + preprocessor_config.json + model.safetensors)
// loads without renaming. See segformer.cpp for the staging, the compressible layers and the BatchNorm folding.
#include <map>
#include <memory>
#include <utility>

#include "lorq/models/model.h"
#include "lorq/models/segformer_config.h"

namespace lorq {

class Segformer : public Model {
 public:
  // Takes every tensor of the checkpoint by name (converted to float32). The decode head's BatchNorm is folded into
  // linear_fuse here. Throws lorq::Error naming `source` when a tensor is missing or has the wrong shape.
  Segformer(SegformerConfig config, std::map<std::string, at::Tensor> tensors, const std::string& source);

  // A freshly initialised network (Hugging Face's init: normal(0, 0.02) weights, zero biases, unit norms), for
  // training from scratch; linear_fuse is created in its folded form (with a bias, no BatchNorm).
  static std::unique_ptr<Segformer> create_random(const SegformerConfig& config, uint64_t seed);
  // Trainable parameters (for a trainer): every registered tensor.
  std::vector<at::Tensor> parameters() const;

  const SegformerConfig& config() const { return config_; }

  TaskKind task() const override { return TaskKind::Segmentation; }
  std::string architecture() const override;  // "segformer-b0".."segformer-b5" for the MiT variants, else custom
  std::string family() const override;
  const Preprocessing& preprocessing() const override { return config_.preprocessing; }
  const std::vector<std::string>& label_names() const override { return config_.label_names; }
  int num_labels() const override { return config_.num_labels; }
  std::map<std::string, int64_t> dimensions() const override;
  std::string config_json() const override;
  std::string preprocessor_config_path() const override { return config_.preprocessor_source; }
  std::unique_ptr<Model> clone() const override;

  // One stage per transformer block (all encoder stages in order); finish() runs the decode head.
  int num_stages() const override { return static_cast<int>(blocks_.size()); }
  StageState embed(const at::Tensor& images) override;
  StageState run_stage(int stage, const StageState& x) override;
  ModelOutputs finish(const StageState& x) override;

 private:
  struct Linear {
    std::string name;
    at::Tensor weight, bias;
  };
  struct Norm {
    at::Tensor weight, bias;
  };
  struct PatchEmbed {
    Linear proj;  // conv weight [C_out, C_in, k, k]
    Norm norm;
    int kernel = 0, stride = 0;
  };
  struct BlockPoints {
    std::string ln1_out, sr_ln_out, q, k, softmax, v, dense_in, ln2_out, dwconv_in, dense2_in;
  };
  struct Block {
    int encoder_stage = 0, index = 0;  // index within its encoder stage
    Norm ln1, ln2, sr_norm;
    Linear query, key, value, sr, out, dense1, dense2;
    at::Tensor dw_weight, dw_bias;  // depthwise 3x3 conv, kept in float (not a linear layer)
    BlockPoints points;
  };

  // A strided convolution run as a linear layer on its im2col patches, [B, C, H, W] -> [B, Ho, Wo, C_out].
  at::Tensor conv_as_linear(const Linear& l, const at::Tensor& x, int kernel, int stride, int padding);
  at::Tensor patch_embed(int encoder_stage, const at::Tensor& x_nchw);
  at::Tensor attention(Block& b, const at::Tensor& x, int64_t h, int64_t w);
  at::Tensor mix_ffn(Block& b, const at::Tensor& x, int64_t h, int64_t w);
  void register_block_points(Block& b, const std::string& prefix);
  void bind(const std::string& key, at::Tensor* slot, const std::vector<int64_t>& shape);
  void fold_decoder_batch_norm();

  SegformerConfig config_;
  std::vector<PatchEmbed> patch_embeds_;
  std::vector<Block> blocks_;
  std::vector<Norm> stage_norms_;               // segformer.encoder.layer_norm.{i}
  std::vector<std::string> stage_norm_points_;  // their activation points
  std::vector<Linear> linear_c_;                // decode_head.linear_c.{i}.proj
  Linear linear_fuse_, classifier_;             // 1x1 convs; linear_fuse carries the folded BatchNorm
  std::string fuse_in_ = "decode_head.linear_fuse.in", classifier_in_ = "decode_head.classifier.in";
  std::map<std::string, at::Tensor> pending_;  // tensors not yet bound during construction
  std::string source_;
};

// BatchNorm (eval) folded into the convolution/linear layer before it: for y = BN(W x + b),
// returns {W', b'} with W' x + b' = y, W' = diag(s) W, b' = s (b − mean) + beta, s = gamma / sqrt(var + eps),
// computed in float64 and returned as float32. `w` is [out, ...] (any trailing shape); `b` may be undefined.
std::pair<at::Tensor, at::Tensor> fold_batch_norm(const at::Tensor& w, const at::Tensor& b, const at::Tensor& gamma,
                                                  const at::Tensor& beta, const at::Tensor& running_mean,
                                                  const at::Tensor& running_var, double eps);

struct Architecture;
// The registry entry (registry.cpp lists it): model_type "segformer", or the tensor shapes.
Architecture segformer_architecture();

}  // namespace lorq
