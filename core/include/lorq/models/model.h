#pragma once
// The model interface every compression stage builds on. An architecture implements it in one file (vit.cpp for
// timm's VisionTransformer) and registers itself in registry.cpp; detection and segmentation transformers follow.
//
// What the stages need from a model:
//  - its task and preprocessing, its label names and the config it was loaded from;
//  - the compressible linear layers, named by their checkpoint key prefix ("blocks.3.attn.qkv"), with their role;
//  - read and replace a layer's weight;
//  - watch a layer's input/output during a forward pass (calibration, Hessians, rounding);
//  - substitute a layer's computation (low-rank factors, fake quantization);
//  - fake-quantize named activation tensors (activation quantization, spec §8.1);
//  - run the network in stages (embed -> stage 0..n-1 -> finish) so one layer's effect can be measured by
//    re-running only what follows it, from cached stage inputs;
//  - a deep copy (clone), so no stage reloads the model from disk.
#include <ATen/core/Tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lorq/models/preprocessing.h"
#include "lorq/types.h"

namespace lorq {

// What a compressible layer is for, declared by the architecture (stages must not guess it from tensor ranks).
enum class LayerRole {
  Hidden,          // a layer inside the network's stages
  PatchEmbedding,  // the image-to-token projection (a strided convolution viewed as a linear layer)
  Head,            // an output head reading pooled or per-token features (classifier head, detection MLPs)
};

// What one stage passes to the next, every tensor with the batch first. A plain ViT passes its tokens; a
// hierarchical encoder passes its running state plus the feature maps its decoder will read.
using StageState = std::vector<at::Tensor>;
StageState slice_batch(const StageState& state, int64_t begin, int64_t end);
StageState cat_batches(const std::vector<StageState>& parts);
int64_t state_bytes(const StageState& state);  // the tensors' storage in bytes

// A network's outputs, named by the task: classification "logits" [B, classes]; detection "logits" [B, Q, K+1] and
// "boxes" [B, Q, 4]; segmentation "logits" [B, K, h, w]. In a fixed order (the task's).
struct ModelOutputs {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;

  size_t size() const { return tensors.size(); }
  void add(const std::string& name, const at::Tensor& t);
  // By value (a Tensor is a shared handle): `const at::Tensor& y = model.forward(x).logits();` must not dangle.
  at::Tensor at(const std::string& name) const;  // throws lorq::Error for an unknown name
  at::Tensor logits() const { return at("logits"); }
  ModelOutputs slice(int64_t begin, int64_t end) const;  // batch rows begin..end-1
  ModelOutputs row(int64_t i) const { return slice(i, i + 1); }
  static ModelOutputs cat(const std::vector<ModelOutputs>& parts);
};

struct LinearLayerInfo {
  std::string name;  // checkpoint key prefix; the weight is name + ".weight"
  int64_t out_features = 0;
  int64_t in_features = 0;
  bool has_bias = false;
  int stage = 0;                      // the stage that contains it (-1: the embedding, before stage 0)
  bool low_rank_allowed = true;       // false for convolutions with a kernel larger than 1x1
  std::vector<int64_t> weight_shape;  // as stored in the checkpoint (4-d for the patch-embed conv)
  LayerRole role = LayerRole::Hidden;
  int64_t params() const { return out_features * in_features; }
  double fp32_bytes() const { return 4.0 * params(); }
};

// Which activation quantizer a hook point takes (spec §8.1).
enum class ActivationKind {
  PerTensor,        // one scale for the whole tensor
  LayerNormOutput,  // a LayerNorm's output read by one linear layer: per-channel, foldable into the LN (§8.5)
  Softmax,          // attention probabilities in [0, 1]: log√2
};

// A tensor an activation quantizer can be placed on. Names (ViT):
//   blocks.{i}.norm1.out        norm1 output = qkv input            LayerNormOutput
//   blocks.{i}.attn.q           q after the 1/√d head scale         PerTensor   (q and k: the inputs of q@kᵀ)
//   blocks.{i}.attn.k           k                                   PerTensor
//   blocks.{i}.attn.softmax     softmax output = input of attn@v    Softmax
//   blocks.{i}.attn.v           v                                   PerTensor
//   blocks.{i}.attn.proj.in     merged heads = proj input           PerTensor
//   blocks.{i}.norm2.out        norm2 output = fc1 input            LayerNormOutput
//   blocks.{i}.mlp.fc2.in       GELU output = fc2 input             PerTensor
//   head.in                     pooled features = head input        PerTensor (LayerNormOutput of fc_norm when the
//                                                                   model pools by average and has an fc_norm)
// Rule: a LayerNorm's output is named "<norm>.out"; any other linear layer's input "<layer>.in". The image (the
// patch-embed input) has no point: it is never quantized.
struct ActivationPoint {
  std::string name;
  ActivationKind kind = ActivationKind::PerTensor;
  std::string consumer;  // the linear layer reading this tensor; empty for matmul operands (q, k, softmax, v)
  std::string norm;      // LayerNormOutput only: the LayerNorm's key prefix ("blocks.3.norm1")
  int stage = 0;         // the stage computing it (as LinearLayerInfo::stage)
};

class Model {
 public:
  // (input, weight, bias-or-undefined) -> output; the default is at::linear.
  using LinearFn = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b)>;
  // Called with a watched layer's input and output.
  using LinearObserver = std::function<void(const std::string& layer, const at::Tensor& in, const at::Tensor& out)>;
  // Replaces an activation tensor by its (fake-)quantized value; must keep the shape.
  using ActivationFn = std::function<at::Tensor(const at::Tensor& x)>;

  virtual ~Model() = default;

  // ---- What the model is
  virtual TaskKind task() const = 0;
  virtual std::string architecture() const = 0;  // e.g. "deit_tiny_patch16_224"
  virtual std::string family() const = 0;        // the registry's name, e.g. "timm VisionTransformer"
  virtual const Preprocessing& preprocessing() const = 0;
  virtual const std::vector<std::string>& label_names() const = 0;
  virtual int num_labels() const = 0;  // classes the task predicts (without detection's "no object")
  std::string label(int index) const;  // the label name, or "class N"
  // A few named sizes for summaries ("depth", "embed_dim", "num_heads", "input_height", ...).
  virtual std::map<std::string, int64_t> dimensions() const = 0;
  // The model's config as JSON: the source's own config.json when it was loaded from one (an export writes it back
  // unchanged), otherwise the inferred one in the format the loader reads.
  virtual std::string config_json() const = 0;
  // The file a Hugging Face checkpoint's image processor was read from ("" for timm models).
  virtual std::string preprocessor_config_path() const { return ""; }
  // A deep copy: every tensor copied, configuration kept; hooks, overrides and observers are not copied.
  virtual std::unique_ptr<Model> clone() const = 0;
  // The positions, in the token sequence of `length` that `layer` sees ([B, length, C]), of the tokens the task's
  // output is read from: a classifier's class token, a detector's detection tokens. Empty when every token is read
  // (average pooling, dense prediction) or the layer does not see the readout's sequence (a patch embedding, a
  // head). Adaptive rounding weights these rows (RoundingSettings::readout_share): a few tokens among hundreds,
  // they are all the output sees.
  virtual std::vector<int64_t> readout_tokens(const std::string& layer, int64_t length) const {
    (void)layer;
    (void)length;
    return {};
  }

  const std::vector<LinearLayerInfo>& linear_layers() const { return layers_; }
  const LinearLayerInfo& layer(const std::string& name) const;

  // Every named tensor of the checkpoint (weights, biases, norms, embeddings), in a stable order.
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() const;
  at::Tensor tensor(const std::string& key) const;
  // Replaces a named tensor by a value of the same shape (converted to float32). Throws lorq::Error otherwise.
  void set_tensor(const std::string& key, const at::Tensor& value);
  // A layer's weight as an out x in matrix (a conv's [out, c, kh, kw] kernel viewed as out x c*kh*kw).
  at::Tensor weight(const std::string& layer) const;
  // Replaces a layer's weight, given as out x in or in the checkpoint's shape (converted to float32).
  // Throws lorq::Error on a shape mismatch.
  void set_weight(const std::string& layer, const at::Tensor& w);
  // A layer's bias [out], or an undefined tensor when it has none.
  at::Tensor bias(const std::string& layer) const;
  // Sets a layer's bias [out]; a layer without one gets one (a new named tensor "<layer>.bias", has_bias becomes
  // true). Throws lorq::Error on a shape mismatch or when the architecture cannot add a bias to that layer.
  void set_bias(const std::string& layer, const at::Tensor& b);

  // Preprocessed images [B, C, H, W] -> the task's named outputs. No autograd graph is recorded unless the caller
  // enables it (training does).
  ModelOutputs forward(const at::Tensor& images);

  // Staged execution: forward(x) == finish(run_stage(n-1, ... run_stage(0, embed(x)))).
  virtual int num_stages() const = 0;
  virtual StageState embed(const at::Tensor& images) = 0;
  virtual StageState run_stage(int stage, const StageState& x) = 0;
  virtual ModelOutputs finish(const StageState& x) = 0;
  ModelOutputs run_from(int stage, StageState x);

  // Hooks. With none set, the float path costs one map-emptiness check per linear layer.
  void set_linear_override(const std::string& layer, LinearFn fn);
  void clear_linear_override(const std::string& layer);
  void clear_linear_overrides() { overrides_.clear(); }
  bool has_linear_override(const std::string& layer) const { return overrides_.count(layer) > 0; }
  void set_observer(const std::vector<std::string>& layers, LinearObserver observer);
  void clear_observer();

  // Activation hook points, in network order (see ActivationPoint for the names).
  const std::vector<ActivationPoint>& activation_points() const { return points_; }
  const ActivationPoint& activation_point(const std::string& name) const;  // throws for unknown names
  // With no hook set, the float path costs one map-emptiness check per point.
  void set_activation_hook(const std::string& point, ActivationFn fn);
  void clear_activation_hook(const std::string& point) { activation_hooks_.erase(point); }
  void clear_activation_hooks() { activation_hooks_.clear(); }
  bool has_activation_hooks() const { return !activation_hooks_.empty(); }

 protected:
  // Registers a named tensor slot; architectures call this for every checkpoint tensor they own.
  void register_tensor(const std::string& key, at::Tensor* slot);
  // bias_slot: where the layer's bias lives, even while it has none, so that set_bias can create one.
  void register_linear(const LinearLayerInfo& info, at::Tensor* bias_slot = nullptr);
  void register_activation_point(const ActivationPoint& point);
  // Called after set_bias gave `layer` a bias it did not have (e.g. to keep the config in step).
  virtual void bias_added(const std::string& layer) { (void)layer; }
  // Every architecture routes its compressible linear layers through here.
  at::Tensor linear(const std::string& name, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);
  // Every architecture passes each activation point's tensor through here.
  at::Tensor activation(const std::string& point, const at::Tensor& x) {
    return activation_hooks_.empty() ? x : run_activation_hook(point, x);
  }

 private:
  at::Tensor run_activation_hook(const std::string& point, const at::Tensor& x);

  std::vector<LinearLayerInfo> layers_;
  std::vector<std::pair<std::string, at::Tensor*>> slots_;
  std::map<std::string, size_t> slot_index_;
  std::map<std::string, LinearFn> overrides_;
  std::map<std::string, bool> observed_;
  LinearObserver observer_;
  std::map<std::string, at::Tensor*> bias_slots_;  // by layer name
  std::vector<ActivationPoint> points_;
  std::map<std::string, ActivationFn> activation_hooks_;
};

// Loads a model from a folder (config.json [+ preprocessor_config.json] + model.safetensors) or a .safetensors file
// (config.json beside it is used when present). The architecture is recognised by the registry (registry.h): the
// Hugging Face `model_type`, then timm's `architecture`, then the tensor shapes. Throws lorq::Error naming the file
// and the problem; an unknown architecture's message lists the supported ones.
std::unique_ptr<Model> load_model(const std::string& path);

// Where a model path's files are: resolves a folder to its safetensors and config files.
struct ModelFiles {
  std::string weights;              // .safetensors
  std::string config;               // config.json, or empty when absent
  std::string preprocessor_config;  // preprocessor_config.json (Hugging Face image processors), or empty
};
ModelFiles locate_model_files(const std::string& path);

}  // namespace lorq
