// timm VisionTransformer: patch embed -> [cls] + pos -> pre-norm blocks (fused-qkv attention, GELU MLP) -> norm ->
// token or average pooling -> head. Module paths equal checkpoint keys.
#include "lorq/models/vit.h"

#include <ATen/ATen.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/models/registry.h"

namespace lorq {

namespace {
std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

void VisionTransformer::bind(const std::string& key, at::Tensor* slot) {
  auto it = pending_.find(key);
  if (it == pending_.end()) throw Error(source_, "missing tensor '" + key + "'");
  *slot = it->second.to(at::kFloat).contiguous();
  pending_.erase(it);
  register_tensor(key, slot);
}

VisionTransformer::VisionTransformer(VitConfig config, std::map<std::string, at::Tensor> tensors,
                                     const std::string& source)
    : config_(std::move(config)), pending_(std::move(tensors)), source_(source) {
  const int64_t D = config_.embed_dim, C = config_.in_chans, P = config_.patch_size;
  const int64_t hidden = static_cast<int64_t>(std::llround(D * config_.mlp_ratio));
  const int64_t grid = config_.img_size / P;
  const int64_t prefix = config_.class_token ? 1 : 0;

  auto expect = [&](const std::string& key, const at::Tensor& t, std::vector<int64_t> shape) {
    if (t.sizes().vec() != shape)
      throw Error(source_, "tensor '" + key + "' has shape " + shape_str(t.sizes()) + ", expected " +
                               shape_str(shape));
  };
  auto bind_checked = [&](const std::string& key, at::Tensor* slot, std::vector<int64_t> shape) {
    bind(key, slot);
    expect(key, *slot, shape);
  };
  auto add_linear = [&](Linear& l, const std::string& name, int64_t out, int64_t in, bool bias, int stage,
                        LayerRole role = LayerRole::Hidden) {
    l.name = name;
    // A bias the config does not announce is still used: LayerNorm folding adds qkv biases (Model::set_bias).
    bias = bias || pending_.count(name + ".bias") > 0;
    bind_checked(name + ".weight", &l.weight, {out, in});
    if (bias) bind_checked(name + ".bias", &l.bias, {out});
    register_linear({name, out, in, bias, stage, true, {out, in}, role}, &l.bias);
  };
  auto add_norm = [&](Norm& n, const std::string& name) {
    bind_checked(name + ".weight", &n.weight, {D});
    bind_checked(name + ".bias", &n.bias, {D});
  };

  bind_checked("patch_embed.proj.weight", &patch_w_, {D, C, P, P});
  bind_checked("patch_embed.proj.bias", &patch_b_, {D});
  register_linear({"patch_embed.proj", D, C * P * P, true, -1, false, {D, C, P, P}, LayerRole::PatchEmbedding});
  if (config_.class_token) bind_checked("cls_token", &cls_token_, {1, 1, D});
  bind_checked("pos_embed", &pos_embed_, {1, grid * grid + prefix, D});

  blocks_.resize(config_.depth);
  for (int i = 0; i < config_.depth; ++i) {
    Block& b = blocks_[i];
    const std::string p = "blocks." + std::to_string(i) + ".";
    add_norm(b.norm1, p + "norm1");
    add_linear(b.qkv, p + "attn.qkv", 3 * D, D, config_.qkv_bias, i);
    add_linear(b.proj, p + "attn.proj", D, D, true, i);
    add_norm(b.norm2, p + "norm2");
    add_linear(b.fc1, p + "mlp.fc1", hidden, D, true, i);
    add_linear(b.fc2, p + "mlp.fc2", D, hidden, true, i);
    register_block_points(i, b);
  }
  if (config_.fc_norm) {
    add_norm(fc_norm_, "fc_norm");
  } else {
    add_norm(norm_, "norm");
  }
  add_linear(head_, "head", config_.num_classes, D, true, config_.depth - 1, LayerRole::Head);
  // The head runs in finish(), after the last stage; measuring it "from the last stage" is what callers want.
  // Its input comes from a LayerNorm only with average pooling + fc_norm; the token pool's select is in between.
  const bool head_reads_norm = config_.global_pool == "avg" && config_.fc_norm;
  register_activation_point({head_in_, head_reads_norm ? ActivationKind::LayerNormOutput : ActivationKind::PerTensor,
                             "head", head_reads_norm ? "fc_norm" : "", config_.depth - 1});
  pending_.clear();  // anything left (e.g. distillation heads of later variants) is ignored
}

void VisionTransformer::bias_added(const std::string& layer) {
  (void)layer;
  bool all_qkv = true;
  for (const Block& b : blocks_) all_qkv = all_qkv && b.qkv.bias.defined();
  config_.qkv_bias = all_qkv;  // so that the config written beside an export describes the tensors
}

void VisionTransformer::register_block_points(int i, Block& b) {
  const std::string p = "blocks." + std::to_string(i) + ".";
  BlockPoints& n = b.points;
  n = {p + "norm1.out", p + "attn.q",       p + "attn.k",    p + "attn.softmax",
       p + "attn.v",    p + "attn.proj.in", p + "norm2.out", p + "mlp.fc2.in"};
  using K = ActivationKind;
  register_activation_point({n.norm1_out, K::LayerNormOutput, b.qkv.name, p + "norm1", i});
  register_activation_point({n.q, K::PerTensor, "", "", i});
  register_activation_point({n.k, K::PerTensor, "", "", i});
  register_activation_point({n.softmax, K::Softmax, "", "", i});
  register_activation_point({n.v, K::PerTensor, "", "", i});
  register_activation_point({n.proj_in, K::PerTensor, b.proj.name, "", i});
  register_activation_point({n.norm2_out, K::LayerNormOutput, b.fc1.name, p + "norm2", i});
  register_activation_point({n.fc2_in, K::PerTensor, b.fc2.name, "", i});
}

StageState VisionTransformer::embed(const at::Tensor& images) {
  const int64_t B = images.size(0), C = config_.in_chans, P = config_.patch_size;
  if (images.dim() != 4 || images.size(1) != C || images.size(2) != config_.img_size ||
      images.size(3) != config_.img_size)
    throw Error("model input must be [B, " + std::to_string(C) + ", " + std::to_string(config_.img_size) + ", " +
                std::to_string(config_.img_size) + "], got " + shape_str(images.sizes()));
  const int64_t g = config_.img_size / P;
  // The stride-P conv is a linear layer on flattened (c, kh, kw) patches: routing it through linear() lets the
  // compression stages treat it like every other layer.
  at::Tensor patches = images.reshape({B, C, g, P, g, P}).permute({0, 2, 4, 1, 3, 5}).reshape({B, g * g, C * P * P});
  at::Tensor x = linear("patch_embed.proj", patches, patch_w_.reshape({patch_w_.size(0), -1}), patch_b_);
  if (config_.class_token) x = at::cat({cls_token_.expand({B, 1, -1}), x}, 1);
  return {x + pos_embed_};
}

at::Tensor VisionTransformer::attention(Block& b, const at::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), H = config_.num_heads, hd = D / H;
  const BlockPoints& pt = b.points;
  at::Tensor qkv = linear(b.qkv.name, x, b.qkv.weight, b.qkv.bias).reshape({B, N, 3, H, hd}).permute({2, 0, 3, 1, 4});
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  at::Tensor q = activation(pt.q, qkv[0] * scale), k = activation(pt.k, qkv[1]), v = activation(pt.v, qkv[2]);
  at::Tensor attn = activation(pt.softmax, at::softmax(parallel_matmul(q, k.transpose(-2, -1)), -1));
  at::Tensor out = activation(pt.proj_in, parallel_matmul(attn, v).transpose(1, 2).reshape({B, N, D}));
  return linear(b.proj.name, out, b.proj.weight, b.proj.bias);
}

StageState VisionTransformer::run_stage(int stage, const StageState& state) {
  Block& b = blocks_.at(stage);
  const at::Tensor& x_in = state.at(0);
  const int64_t D = config_.embed_dim;
  const double eps = config_.norm_eps;
  const BlockPoints& pt = b.points;
  at::Tensor x =
      x_in + attention(b, activation(pt.norm1_out, at::layer_norm(x_in, {D}, b.norm1.weight, b.norm1.bias, eps)));
  at::Tensor h = activation(pt.norm2_out, at::layer_norm(x, {D}, b.norm2.weight, b.norm2.bias, eps));
  h = activation(pt.fc2_in, at::gelu(linear(b.fc1.name, h, b.fc1.weight, b.fc1.bias)));
  return {x + linear(b.fc2.name, h, b.fc2.weight, b.fc2.bias)};
}

ModelOutputs VisionTransformer::finish(const StageState& state) {
  const at::Tensor& x_in = state.at(0);
  const int64_t D = config_.embed_dim;
  const double eps = config_.norm_eps;
  at::Tensor pooled;
  if (config_.global_pool == "avg") {
    at::Tensor x = config_.fc_norm ? x_in : at::layer_norm(x_in, {D}, norm_.weight, norm_.bias, eps);
    pooled = x.slice(1, config_.class_token ? 1 : 0).mean(1);
    if (config_.fc_norm) pooled = at::layer_norm(pooled, {D}, fc_norm_.weight, fc_norm_.bias, eps);
  } else {
    pooled = at::layer_norm(x_in, {D}, norm_.weight, norm_.bias, eps).select(1, 0);
  }
  ModelOutputs out;
  out.add("logits", linear(head_.name, activation(head_in_, pooled), head_.weight, head_.bias));
  return out;
}

std::string VisionTransformer::family() const { return "timm VisionTransformer"; }

std::map<std::string, int64_t> VisionTransformer::dimensions() const {
  return {{"depth", config_.depth},          {"embed_dim", config_.embed_dim},  {"num_heads", config_.num_heads},
          {"num_classes", config_.num_classes}, {"input_height", config_.img_size}, {"input_width", config_.img_size},
          {"patch_size", config_.patch_size}};
}

std::string VisionTransformer::config_json() const {
  // The source's own file when there was one (biases created by LayerNorm folding are bound without the config's
  // qkv_bias, so it stays valid); the inferred config otherwise.
  return config_.source_json.empty() ? vit_config_to_json(config_) : config_.source_json;
}

std::unique_ptr<Model> VisionTransformer::clone() const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : named_tensors()) tensors[key] = t.clone();
  return std::make_unique<VisionTransformer>(config_, std::move(tensors), source_);
}

std::vector<int64_t> VisionTransformer::readout_tokens(const std::string& layer, int64_t length) const {
  // The head reads the class token after the last block; average pooling reads every token.
  if (!config_.class_token || config_.global_pool != "token" || length < 2 || layer.rfind("blocks.", 0) != 0) return {};
  return {0};
}

std::vector<at::Tensor> VisionTransformer::parameters() const {
  std::vector<at::Tensor> out;
  for (auto& [key, t] : named_tensors()) out.push_back(t);
  return out;
}

std::unique_ptr<VisionTransformer> VisionTransformer::create_random(const VitConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  const int64_t D = c.embed_dim, P = c.patch_size, hidden = static_cast<int64_t>(std::llround(D * c.mlp_ratio));
  const int64_t grid = c.img_size / P, prefix = c.class_token ? 1 : 0;
  std::map<std::string, at::Tensor> t;
  // timm: trunc_normal(std=.02) for linear weights and embeddings, zeros for biases, ones/zeros for norms.
  auto tn = [](std::vector<int64_t> s, double std) { return at::randn(s).clamp(-2, 2) * std; };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, bool bias) {
    t[name + ".weight"] = tn({out, in}, 0.02);
    if (bias) t[name + ".bias"] = at::zeros({out});
  };
  auto norm = [&](const std::string& name) {
    t[name + ".weight"] = at::ones({D});
    t[name + ".bias"] = at::zeros({D});
  };
  // The patch embedding is a conv in timm, initialised like a linear layer on flattened patches.
  t["patch_embed.proj.weight"] = tn({D, c.in_chans, P, P}, 0.02);
  t["patch_embed.proj.bias"] = at::zeros({D});
  if (c.class_token) t["cls_token"] = tn({1, 1, D}, 1e-6);
  t["pos_embed"] = tn({1, grid * grid + prefix, D}, 0.02);
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    norm(p + "norm1");
    linear(p + "attn.qkv", 3 * D, D, c.qkv_bias);
    linear(p + "attn.proj", D, D, true);
    norm(p + "norm2");
    linear(p + "mlp.fc1", hidden, D, true);
    linear(p + "mlp.fc2", D, hidden, true);
  }
  norm(c.fc_norm ? "fc_norm" : "norm");
  linear("head", c.num_classes, D, true);
  return std::make_unique<VisionTransformer>(c, std::move(t), "<random init>");
}

Architecture vit_architecture() {
  Architecture a;
  a.name = "timm VisionTransformer (ViT, DeiT)";
  a.timm_name = [](const std::string& n) {
    return n.rfind("vit_", 0) == 0 || n.rfind("deit_", 0) == 0 || n == "vit" || n == "deit";
  };
  a.shapes = [](const TensorShapes& s) {
    auto pe = s.find("patch_embed.proj.weight");
    return pe != s.end() && pe->second.size() == 4 && s.count("blocks.0.attn.qkv.weight") > 0;
  };
  a.build = [](const CheckpointInfo& info, std::map<std::string, at::Tensor> tensors) -> std::unique_ptr<Model> {
    VitConfig config;
    if (!info.files.config.empty()) config = parse_vit_config(info.config_text, info.files.config);
    config.source = info.files.config.empty() ? info.files.weights : info.files.config;
    complete_vit_config(config, info.shapes, info.files.weights);
    return std::make_unique<VisionTransformer>(std::move(config), std::move(tensors), info.files.weights);
  };
  return a;
}

}  // namespace lorq
