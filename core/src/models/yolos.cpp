// Hugging Face YolosForObjectDetection: patch conv -> [CLS, patches, detection tokens] + bicubic-interpolated
// position embeddings -> pre-norm ViT layers (separate query/key/value, optional mid-layer position embeddings) ->
// final LayerNorm -> class and box MLP heads on the detection tokens. Every step mirrors modeling_yolos.py, op for
// op, so that the HF goldens are reproduced to float32 rounding.
#include "lorq/models/yolos.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/models/registry.h"

namespace lorq {

namespace {

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// At most this many input grids keep their interpolated embeddings (a detection set's images vary in size).
constexpr size_t kMaxCachedGrids = 16;

}  // namespace

void YolosForObjectDetection::bind(const std::string& key, at::Tensor* slot, const std::vector<int64_t>& shape) {
  auto it = pending_.find(key);
  if (it == pending_.end()) throw Error(source_, "missing tensor '" + key + "'");
  if (it->second.sizes().vec() != shape)
    throw Error(source_,
                "tensor '" + key + "' has shape " + shape_str(it->second.sizes()) + ", expected " + shape_str(shape));
  *slot = it->second.to(at::kFloat).contiguous();
  pending_.erase(it);
  register_tensor(key, slot);
}

void YolosForObjectDetection::add_linear(Linear& l, const std::string& name, int64_t out, int64_t in, bool bias,
                                         int stage, LayerRole role) {
  l.name = name;
  // A bias the config does not announce is still used: a compressed export may have added one (Model::set_bias).
  bias = bias || pending_.count(name + ".bias") > 0;
  bind(name + ".weight", &l.weight, {out, in});
  if (bias) bind(name + ".bias", &l.bias, {out});
  register_linear({name, out, in, bias, stage, true, {out, in}, role}, &l.bias);
}

YolosForObjectDetection::YolosForObjectDetection(YolosConfig config, std::map<std::string, at::Tensor> tensors,
                                                 const std::string& source)
    : config_(std::move(config)), pending_(std::move(tensors)), source_(source) {
  const int64_t D = config_.hidden_size, C = config_.num_channels, P = config_.patch_size;
  const int64_t Q = config_.num_detection_tokens, L = config_.num_hidden_layers;
  const int64_t seq = 1 + int64_t(config_.grid_height()) * config_.grid_width() + Q;

  bind("vit.embeddings.cls_token", &cls_token_, {1, 1, D});
  bind("vit.embeddings.detection_tokens", &detection_tokens_, {1, Q, D});
  bind("vit.embeddings.position_embeddings", &position_embeddings_, {1, seq, D});
  const std::string patch = "vit.embeddings.patch_embeddings.projection";
  bind(patch + ".weight", &patch_w_, {D, C, P, P});
  bind(patch + ".bias", &patch_b_, {D});
  register_linear({patch, D, C * P * P, true, -1, false, {D, C, P, P}, LayerRole::PatchEmbedding});

  layers_.resize(L);
  for (int i = 0; i < L; ++i) {
    Layer& l = layers_[i];
    const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
    bind(p + "layernorm_before.weight", &l.norm_before.weight, {D});
    bind(p + "layernorm_before.bias", &l.norm_before.bias, {D});
    const bool qkv_bias = config_.qkv_bias;
    add_linear(l.query, p + "attention.attention.query", D, D, qkv_bias, i, LayerRole::Hidden);
    add_linear(l.key, p + "attention.attention.key", D, D, qkv_bias, i, LayerRole::Hidden);
    add_linear(l.value, p + "attention.attention.value", D, D, qkv_bias, i, LayerRole::Hidden);
    add_linear(l.attn_out, p + "attention.output.dense", D, D, true, i, LayerRole::Hidden);
    bind(p + "layernorm_after.weight", &l.norm_after.weight, {D});
    bind(p + "layernorm_after.bias", &l.norm_after.bias, {D});
    add_linear(l.intermediate, p + "intermediate.dense", config_.intermediate_size, D, true, i, LayerRole::Hidden);
    add_linear(l.output, p + "output.dense", D, config_.intermediate_size, true, i, LayerRole::Hidden);
    register_layer_points(i, l);
  }
  // HF sizes this parameter from image_size[0] * image_size[1] // patch², which equals the grid's patch count only
  // when both sides are multiples of the patch; otherwise HF itself cannot interpolate it, so neither do we.
  if (config_.use_mid_position_embeddings)
    bind("vit.encoder.mid_position_embeddings", &mid_position_embeddings_, {L - 1, 1, seq, D});
  bind("vit.layernorm.weight", &final_norm_.weight, {D});
  bind("vit.layernorm.bias", &final_norm_.bias, {D});

  // The heads run in finish(), after the last stage: re-running "from the last stage" re-runs them.
  const int head_stage = static_cast<int>(L - 1);
  // The final LayerNorm's output feeds both heads' first layers: with two consumers it cannot be folded into
  // one of them (LayerNormOutput), so it takes a per-tensor quantizer.
  register_activation_point({head_in_, ActivationKind::PerTensor, "", "", head_stage});
  const std::pair<Head*, std::string> heads[] = {{&classifier_, "class_labels_classifier"},
                                                 {&box_predictor_, "bbox_predictor"}};
  for (const auto& [head, name] : heads) {
    const int64_t out = head == &classifier_ ? config_.num_labels + 1 : 4;
    for (int k = 0; k < 3; ++k) {
      const std::string layer = name + ".layers." + std::to_string(k);
      add_linear(head->layers[k], layer, k == 2 ? out : D, D, true, head_stage, LayerRole::Head);
      if (k > 0) {
        head->in_points[k] = layer + ".in";
        register_activation_point({head->in_points[k], ActivationKind::PerTensor, layer, "", head_stage});
      }
    }
  }
  // HF's loader ignores unexpected keys, and so do we, except weights that say the config is wrong.
  if (pending_.count("vit.encoder.mid_position_embeddings"))
    throw Error(source_,
                "the checkpoint has mid-layer position embeddings but its config sets "
                "use_mid_position_embeddings false");
  pending_.clear();
}

void YolosForObjectDetection::register_layer_points(int i, Layer& l) {
  const std::string p = "vit.encoder.layer." + std::to_string(i) + ".";
  const std::string a = p + "attention.attention.";
  LayerPoints& n = l.points;
  n = {p + "layernorm_before.out",
       a + "q",
       a + "k",
       a + "softmax",
       a + "v",
       l.attn_out.name + ".in",
       p + "layernorm_after.out",
       l.output.name + ".in"};
  using K = ActivationKind;
  // layernorm_before feeds three layers (query, key, value): folding a per-channel quantizer into the LayerNorm
  // needs the one consumer that undoes it (ViT's fused qkv), so here it is quantized per tensor. No consumer is
  // named because ActivationPoint holds one and naming `query` alone would ridge-correct only a third of them.
  register_activation_point({n.norm_before_out, K::PerTensor, "", "", i});
  register_activation_point({n.q, K::PerTensor, "", "", i});
  register_activation_point({n.k, K::PerTensor, "", "", i});
  register_activation_point({n.softmax, K::Softmax, "", "", i});
  register_activation_point({n.v, K::PerTensor, "", "", i});
  register_activation_point({n.attn_out_in, K::PerTensor, l.attn_out.name, "", i});
  register_activation_point({n.norm_after_out, K::LayerNormOutput, l.intermediate.name, p + "layernorm_after", i});
  register_activation_point({n.out_in, K::PerTensor, l.output.name, "", i});
}

void YolosForObjectDetection::bias_added(const std::string& layer) {
  (void)layer;
  // The source config.json is written back unchanged beside an export; the loader accepts biases it does not
  // announce (add_linear), so qkv_bias is only kept in step for this object's own description.
  bool all = true;
  for (const Layer& l : layers_) all = all && l.query.bias.defined() && l.key.bias.defined() && l.value.bias.defined();
  config_.qkv_bias = all;
}

std::map<std::string, int64_t> YolosForObjectDetection::dimensions() const {
  return {{"depth", config_.num_hidden_layers},
          {"embed_dim", config_.hidden_size},
          {"num_heads", config_.num_attention_heads},
          {"mlp_dim", config_.intermediate_size},
          {"num_classes", config_.num_labels},
          {"detection_tokens", config_.num_detection_tokens},
          {"input_height", config_.preprocessing.input_height},
          {"input_width", config_.preprocessing.input_width},
          {"patch_size", config_.patch_size}};
}

std::unique_ptr<Model> YolosForObjectDetection::clone() const {
  // A fresh object: its interpolation cache starts empty, so nothing computed from this model's tensors leaks.
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : named_tensors()) tensors[key] = t.clone();
  return std::make_unique<YolosForObjectDetection>(config_, std::move(tensors), source_);
}

std::vector<int64_t> YolosForObjectDetection::readout_tokens(const std::string& layer, int64_t length) const {
  // The class and box heads read the detection tokens, the last num_detection_tokens of the encoder's sequence.
  const int64_t Q = config_.num_detection_tokens;
  if (layer.rfind("vit.encoder.layer.", 0) != 0 || length <= Q) return {};
  std::vector<int64_t> out;
  for (int64_t t = length - Q; t < length; ++t) out.push_back(t);
  return out;
}

// ---- Position embeddings

// InterpolateInitialPositionEmbeddings / InterpolateMidPositionEmbeddings: the patch part [N, grid, D] is viewed as
// [N, D, gh, gw] exactly as HF views it (a transposed, channels-last view), resized with PyTorch's bicubic
// (A = -0.75, align_corners false, no scale factors), flattened back to [N, rows*cols, D].
at::Tensor YolosForObjectDetection::interpolate_patch_grid(const at::Tensor& patch_pe, int64_t rows,
                                                           int64_t cols) const {
  const int64_t N = patch_pe.size(0), D = patch_pe.size(2);
  const at::Tensor grid = patch_pe.transpose(1, 2).view({N, D, config_.grid_height(), config_.grid_width()});
  const at::Tensor resized = at::upsample_bicubic2d(grid, {rows, cols}, /*align_corners=*/false);
  return resized.flatten(2).transpose(1, 2);
}

YolosForObjectDetection::Interpolated YolosForObjectDetection::interpolated(int64_t rows, int64_t cols) {
  const int64_t Q = config_.num_detection_tokens;
  auto compute_pe = [&] {
    const at::Tensor& pe = position_embeddings_;
    const at::Tensor patches = pe.slice(1, 1, pe.size(1) - Q);
    return at::cat({pe.slice(1, 0, 1), interpolate_patch_grid(patches, rows, cols), pe.slice(1, pe.size(1) - Q)}, 1);
  };
  auto compute_mid = [&] {
    const at::Tensor& mid = mid_position_embeddings_;  // [L-1, 1, seq, D]
    const int64_t depth = mid.size(0), seq = mid.size(2), D = mid.size(3);
    const at::Tensor patches = mid.slice(2, 1, seq - Q).reshape({depth, seq - 1 - Q, D});
    const at::Tensor resized =
        interpolate_patch_grid(patches, rows, cols).contiguous().view({depth, 1, rows * cols, D});
    return at::cat({mid.slice(2, 0, 1), resized, mid.slice(2, seq - Q)}, 2);
  };
  auto compute = [&] {
    Interpolated fresh;
    fresh.source = position_embeddings_;
    fresh.version = position_embeddings_._version();
    fresh.pe = compute_pe();
    if (mid_position_embeddings_.defined()) {
      fresh.mid_source = mid_position_embeddings_;
      fresh.mid_version = mid_position_embeddings_._version();
      fresh.mid_pe = compute_mid();
    }
    return fresh;
  };
  // While autograd records (training), they are recomputed so that gradients reach the parameters.
  if (c10::GradMode::is_enabled() && (position_embeddings_.requires_grad() ||
                                      (mid_position_embeddings_.defined() && mid_position_embeddings_.requires_grad())))
    return compute();
  std::lock_guard<std::mutex> lock(interpolated_mutex_);
  auto it = interpolated_.find({rows, cols});
  // set_tensor replaces a parameter (another tensor); an in-place edit bumps its version: either invalidates.
  if (it != interpolated_.end()) {
    const Interpolated& e = it->second;
    const bool pe_valid = e.source.is_same(position_embeddings_) && e.version == position_embeddings_._version();
    const bool mid_valid =
        !mid_position_embeddings_.defined() ||
        (e.mid_source.is_same(mid_position_embeddings_) && e.mid_version == mid_position_embeddings_._version());
    if (pe_valid && mid_valid) return e;
  }
  if (interpolated_.size() >= kMaxCachedGrids) interpolated_.clear();
  return interpolated_[{rows, cols}] = compute();
}

at::Tensor YolosForObjectDetection::interpolated_position_embeddings(int64_t rows, int64_t cols) {
  return interpolated(rows, cols).pe;
}

at::Tensor YolosForObjectDetection::interpolated_mid_position_embeddings(int64_t rows, int64_t cols) {
  return interpolated(rows, cols).mid_pe;
}

// ---- Forward

StageState YolosForObjectDetection::embed(const at::Tensor& images) {
  const int64_t C = config_.num_channels, P = config_.patch_size;
  if (images.dim() != 4 || images.size(1) != C || images.size(2) < P || images.size(3) < P)
    throw Error("model input must be [B, " + std::to_string(C) + ", H >= " + std::to_string(P) +
                ", W >= " + std::to_string(P) + "], got " + shape_str(images.sizes()));
  const int64_t B = images.size(0), rows = images.size(2) / P, cols = images.size(3) / P;
  // The stride-P conv drops a partial last row/column of pixels; as a linear layer on flattened (c, kh, kw)
  // patches it goes through linear() like every other compressible layer.
  const at::Tensor x = images.slice(2, 0, rows * P).slice(3, 0, cols * P);
  const at::Tensor patches =
      x.reshape({B, C, rows, P, cols, P}).permute({0, 2, 4, 1, 3, 5}).reshape({B, rows * cols, C * P * P});
  const at::Tensor tokens =
      linear("vit.embeddings.patch_embeddings.projection", patches, patch_w_.reshape({patch_w_.size(0), -1}), patch_b_);
  const at::Tensor seq = at::cat({cls_token_.expand({B, -1, -1}), tokens, detection_tokens_.expand({B, -1, -1})}, 1);
  const at::Tensor grid = at::tensor({rows, cols}, at::kLong).expand({B, 2}).contiguous();
  return {seq + interpolated(rows, cols).pe, grid};
}

at::Tensor YolosForObjectDetection::hidden_activation(const at::Tensor& x) const {
  const std::string& act = config_.hidden_act;
  if (act == "gelu") return at::gelu(x);  // exact erf, as HF's GELUActivation
  if (act == "relu") return at::relu(x);
  return at::gelu(x, "tanh");  // gelu_new / gelu_pytorch_tanh
}

at::Tensor YolosForObjectDetection::attention(Layer& l, const at::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), H = config_.num_attention_heads, hd = D / H;
  const LayerPoints& pt = l.points;
  auto heads = [&](const at::Tensor& t) { return t.view({B, N, H, hd}).permute({0, 2, 1, 3}); };
  const at::Tensor q = activation(pt.q, heads(linear(l.query.name, x, l.query.weight, l.query.bias)));
  const at::Tensor k = activation(pt.k, heads(linear(l.key.name, x, l.key.weight, l.key.bias)));
  const at::Tensor v = activation(pt.v, heads(linear(l.value.name, x, l.value.weight, l.value.bias)));
  // eager_attention_forward: the scale multiplies the scores (not q), in float32.
  const double scaling = std::pow(static_cast<double>(hd), -0.5);
  const at::Tensor scores = parallel_matmul(q, k.transpose(-1, -2)) * scaling;
  const at::Tensor probs = activation(pt.softmax, at::softmax(scores, -1));
  const at::Tensor context = parallel_matmul(probs, v).transpose(1, 2).contiguous().reshape({B, N, D});
  return linear(l.attn_out.name, activation(pt.attn_out_in, context), l.attn_out.weight, l.attn_out.bias);
}

StageState YolosForObjectDetection::run_stage(int stage, const StageState& state) {
  Layer& l = layers_.at(stage);
  const at::Tensor& x_in = state.at(0);
  const int64_t D = config_.hidden_size;
  const double eps = config_.layer_norm_eps;
  const LayerPoints& pt = l.points;
  const at::Tensor normed =
      activation(pt.norm_before_out, at::layer_norm(x_in, {D}, l.norm_before.weight, l.norm_before.bias, eps));
  const at::Tensor x = attention(l, normed) + x_in;
  at::Tensor h = activation(pt.norm_after_out, at::layer_norm(x, {D}, l.norm_after.weight, l.norm_after.bias, eps));
  h = activation(pt.out_in,
                 hidden_activation(linear(l.intermediate.name, h, l.intermediate.weight, l.intermediate.bias)));
  at::Tensor out = linear(l.output.name, h, l.output.weight, l.output.bias) + x;
  if (mid_position_embeddings_.defined() && stage < num_stages() - 1) {
    const at::Tensor& grid = state.at(1);
    if (grid.size(0) == 0) return {out, grid};
    const int64_t rows = grid[0][0].item<int64_t>(), cols = grid[0][1].item<int64_t>();
    out = out + interpolated(rows, cols).mid_pe[stage];
  }
  return {out, state.at(1)};
}

at::Tensor YolosForObjectDetection::last_hidden_state(const StageState& state) const {
  const int64_t D = config_.hidden_size;
  return at::layer_norm(state.at(0), {D}, final_norm_.weight, final_norm_.bias, config_.layer_norm_eps);
}

at::Tensor YolosForObjectDetection::run_head(Head& h, const at::Tensor& x) {
  at::Tensor y = x;
  for (int k = 0; k < 3; ++k) {
    if (k > 0) y = activation(h.in_points[k], at::relu(y));
    y = linear(h.layers[k].name, y, h.layers[k].weight, h.layers[k].bias);
  }
  return y;
}

ModelOutputs YolosForObjectDetection::finish(const StageState& state) {
  const at::Tensor sequence = last_hidden_state(state);
  const at::Tensor detections =
      activation(head_in_, sequence.slice(1, sequence.size(1) - config_.num_detection_tokens));
  ModelOutputs out;
  out.add("logits", run_head(classifier_, detections));
  out.add("boxes", run_head(box_predictor_, detections).sigmoid());
  return out;
}

// ---- Registry entry

Architecture yolos_architecture() {
  Architecture a;
  a.name = "Hugging Face YOLOS (YolosForObjectDetection)";
  a.model_types = {"yolos"};
  a.shapes = [](const TensorShapes& s) {
    return s.count("vit.embeddings.detection_tokens") > 0 && s.count("class_labels_classifier.layers.0.weight") > 0;
  };
  a.build = [](const CheckpointInfo& info, std::map<std::string, at::Tensor> tensors) -> std::unique_ptr<Model> {
    // The architecture comes from config.json: without one, the tensors alone cannot tell image_size (the grid
    // the position embeddings are laid out on) or the LayerNorm eps.
    if (info.files.config.empty())
      throw Error(info.files.weights, "a YOLOS checkpoint needs its config.json beside it");
    YolosConfig config = parse_yolos_config(info.config_text, info.files.config);
    if (!info.files.preprocessor_config.empty())
      parse_yolos_preprocessor(config, read_text_file(info.files.preprocessor_config), info.files.preprocessor_config);
    return std::make_unique<YolosForObjectDetection>(std::move(config), std::move(tensors), info.files.weights);
  };
  return a;
}

}  // namespace lorq
