#pragma once
// The model interface every compression stage builds on. An architecture implements it in one file
// (vit.cpp for timm's VisionTransformer); detection and segmentation transformers implement it next.
//
// What the stages need from a model:
//  - the compressible linear layers, named by their checkpoint key prefix ("blocks.3.attn.qkv");
//  - read and replace a layer's weight;
//  - watch a layer's input/output during a forward pass (calibration, Hessians, rounding);
//  - substitute a layer's computation (low-rank factors, fake quantization);
//  - run the network in stages (embed -> stage 0..n-1 -> finish) so one layer's effect can be measured by
//    re-running only what follows it, from cached stage inputs.
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lorq/model_config.h"

namespace lorq {

struct LinearLayerInfo {
  std::string name;  // checkpoint key prefix; the weight is name + ".weight"
  int64_t out_features = 0;
  int64_t in_features = 0;
  bool has_bias = false;
  int stage = 0;                      // the stage that contains it (-1: the embedding, before stage 0)
  bool low_rank_allowed = true;       // false for convolutions with a kernel larger than 1x1
  std::vector<int64_t> weight_shape;  // as stored in the checkpoint (4-d for the patch-embed conv)
  int64_t params() const { return out_features * in_features; }
  double fp32_bytes() const { return 4.0 * params(); }
};

class Model {
 public:
  // (input, weight, bias-or-undefined) -> output; the default is at::linear.
  using LinearFn = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b)>;
  // Called with a watched layer's input and output.
  using LinearObserver = std::function<void(const std::string& layer, const at::Tensor& in, const at::Tensor& out)>;

  virtual ~Model() = default;

  virtual const ModelConfig& config() const = 0;
  const std::vector<LinearLayerInfo>& linear_layers() const { return layers_; }
  const LinearLayerInfo& layer(const std::string& name) const;

  // Every named tensor of the checkpoint (weights, biases, norms, embeddings), in a stable order.
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
  at::Tensor tensor(const std::string& key) const;
  // A layer's weight as an out x in matrix (a conv's [out, c, kh, kw] kernel viewed as out x c*kh*kw).
  at::Tensor weight(const std::string& layer) const;
  // Replaces a layer's weight, given as out x in or in the checkpoint's shape (converted to float32).
  // Throws lorq::Error on a shape mismatch.
  void set_weight(const std::string& layer, const at::Tensor& w);

  // Preprocessed images [B, C, H, W] -> logits [B, classes]. No autograd graph is recorded unless the caller
  // enables it (training does).
  at::Tensor forward(const at::Tensor& images);

  // Staged execution: forward(x) == finish(run_stage(n-1, ... run_stage(0, embed(x)))).
  virtual int num_stages() const = 0;
  virtual at::Tensor embed(const at::Tensor& images) = 0;
  virtual at::Tensor run_stage(int stage, const at::Tensor& x) = 0;
  virtual at::Tensor finish(const at::Tensor& x) = 0;
  at::Tensor run_from(int stage, at::Tensor x);

  // Hooks. With none set, the float path costs one map-emptiness check per linear layer.
  void set_linear_override(const std::string& layer, LinearFn fn);
  void clear_linear_override(const std::string& layer);
  void clear_linear_overrides() { overrides_.clear(); }
  bool has_linear_override(const std::string& layer) const { return overrides_.count(layer) > 0; }
  void set_observer(const std::vector<std::string>& layers, LinearObserver observer);
  void clear_observer();

 protected:
  // Registers a named tensor slot; architectures call this for every checkpoint tensor they own.
  void register_tensor(const std::string& key, at::Tensor* slot);
  void register_linear(const LinearLayerInfo& info) { layers_.push_back(info); }
  // Every architecture routes its compressible linear layers through here.
  at::Tensor linear(const std::string& name, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

 private:
  std::vector<LinearLayerInfo> layers_;
  std::vector<std::pair<std::string, at::Tensor*>> slots_;
  std::map<std::string, size_t> slot_index_;
  std::map<std::string, LinearFn> overrides_;
  std::map<std::string, bool> observed_;
  LinearObserver observer_;
};

// Loads a model from a folder (config.json + model.safetensors) or a .safetensors file (config.json beside it
// is used when present, otherwise everything is inferred from the tensor shapes). Throws lorq::Error naming the
// file and the problem.
std::unique_ptr<Model> load_model(const std::string& path);

// Where a model path's files are: resolves a folder to its safetensors and config files.
struct ModelFiles {
  std::string weights;  // .safetensors
  std::string config;   // config.json, or empty when absent
};
ModelFiles locate_model_files(const std::string& path);

}  // namespace lorq
