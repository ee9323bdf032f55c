#pragma once
// Hugging Face YolosForObjectDetection in LibTorch (transformers' modeling_yolos.py). Tensor names are the HF
// state_dict keys, so a hub checkpoint's model.safetensors loads without renaming.
//
// Stages: embed = patch embedding + [CLS, patches, detection tokens] + interpolated position embeddings; stage i =
// encoder layer i (+ its mid-layer position embedding when the config uses them); finish = final LayerNorm and the
// two heads on the detection tokens. A stage state is {tokens [B, 1+P+Q, D], grid [B, 2] int64 (patch rows and
// columns)}: the mid-layer embeddings depend on the input's grid, which the token count alone does not determine.
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "lorq/models/model.h"
#include "lorq/models/yolos_config.h"

namespace lorq {

class YolosForObjectDetection : public Model {
 public:
  // Takes every tensor of the checkpoint by name. Throws lorq::Error naming `source` when a tensor is missing or
  // has the wrong shape.
  YolosForObjectDetection(YolosConfig config, std::map<std::string, at::Tensor> tensors, const std::string& source);

  const YolosConfig& config() const { return config_; }

  TaskKind task() const override { return TaskKind::Detection; }
  std::string architecture() const override { return config_.name; }
  std::string family() const override { return "Hugging Face YOLOS"; }
  const Preprocessing& preprocessing() const override { return config_.preprocessing; }
  const std::vector<std::string>& label_names() const override { return config_.label_names; }
  int num_labels() const override { return config_.num_labels; }
  std::map<std::string, int64_t> dimensions() const override;
  std::string config_json() const override { return config_.source_json; }
  std::string preprocessor_config_path() const override { return config_.preprocessor_source; }
  std::unique_ptr<Model> clone() const override;
  std::vector<int64_t> readout_tokens(const std::string& layer, int64_t length) const override;

  int num_stages() const override { return config_.num_hidden_layers; }
  StageState embed(const at::Tensor& images) override;
  StageState run_stage(int stage, const StageState& x) override;
  ModelOutputs finish(const StageState& x) override;

  // Intermediates HF also exposes (for tests against its goldens):
  // position embeddings interpolated to a grid of rows x cols patches, [1, 1+rows*cols+Q, D];
  at::Tensor interpolated_position_embeddings(int64_t rows, int64_t cols);
  // the mid-layer ones, [L-1, 1, 1+rows*cols+Q, D] (undefined without mid-layer position embeddings);
  at::Tensor interpolated_mid_position_embeddings(int64_t rows, int64_t cols);
  // the final LayerNorm of the last stage's tokens (HF's last_hidden_state).
  at::Tensor last_hidden_state(const StageState& x) const;

 private:
  struct Linear {
    std::string name;
    at::Tensor weight, bias;
  };
  struct Norm {
    at::Tensor weight, bias;
  };
  // Activation point names, built once so the forward pass does not format strings.
  struct LayerPoints {
    std::string norm_before_out, q, k, softmax, v, attn_out_in, norm_after_out, out_in;
  };
  struct Layer {
    Norm norm_before, norm_after;
    Linear query, key, value, attn_out, intermediate, output;
    LayerPoints points;
  };
  struct Head {  // YolosMLPPredictionHead: 3 linear layers, ReLU between
    Linear layers[3];
    std::string in_points[3];  // the inputs of layers 1 and 2 (index 0 unused: the shared head input)
  };
  // Interpolated embeddings of one grid, valid while the parameters they came from are unchanged.
  struct Interpolated {
    at::Tensor source, mid_source;  // the parameters they were computed from (same tensor and version = valid)
    int64_t version = 0, mid_version = 0;
    at::Tensor pe, mid_pe;
  };

  void bind(const std::string& key, at::Tensor* slot, const std::vector<int64_t>& shape);
  void add_linear(Linear& l, const std::string& name, int64_t out, int64_t in, bool bias, int stage, LayerRole role);
  void register_layer_points(int i, Layer& l);
  void bias_added(const std::string& layer) override;
  Interpolated interpolated(int64_t rows, int64_t cols);  // by value: another call may evict the entry
  at::Tensor interpolate_patch_grid(const at::Tensor& patch_pe, int64_t rows, int64_t cols) const;
  at::Tensor attention(Layer& l, const at::Tensor& x);
  at::Tensor hidden_activation(const at::Tensor& x) const;
  at::Tensor run_head(Head& h, const at::Tensor& x);

  YolosConfig config_;
  at::Tensor patch_w_, patch_b_, cls_token_, detection_tokens_, position_embeddings_, mid_position_embeddings_;
  std::vector<Layer> layers_;
  Norm final_norm_;
  Head classifier_, box_predictor_;
  std::string head_in_ = "vit.layernorm.out";
  std::map<std::string, at::Tensor> pending_;  // tensors not yet bound during construction
  std::string source_;
  std::map<std::pair<int64_t, int64_t>, Interpolated> interpolated_;  // by grid (rows, cols)
  std::mutex interpolated_mutex_;
};

struct Architecture;
// The registry entry (registry.cpp lists it): model_type "yolos", or tensors named like a YOLOS checkpoint.
Architecture yolos_architecture();

}  // namespace lorq
