// Hugging Face SegformerForSemanticSegmentation (modeling_segformer.py), computed as its eval() forward:
//   encoder stage i: overlapping patch embedding (conv k_i, stride s_i, padding k_i//2, then LayerNorm) ->
//     depths[i] blocks (x += attn(LN1 x); x += MixFFN(LN2 x)) -> LayerNorm -> feature map f_i [B, C_i, h_i, w_i];
//   efficient attention: q from every token, k and v from the tokens reduced by the sr conv (kernel = stride =
//     sr_ratio) + LayerNorm when sr_ratio > 1; scores / sqrt(head_dim) -> softmax;
//   Mix-FFN: dense1 -> depthwise 3x3 conv (padding 1) -> exact (erf) GELU -> dense2;
//   decode head: linear_c[i] on f_i -> bilinear upsampling (align_corners false) to f_0's size -> concatenation in
//     reverse stage order -> linear_fuse (1x1, no bias) -> BatchNorm (eval) -> ReLU -> classifier (1x1).
// Every LayerNorm is nn.LayerNorm's default eps 1e-5: the HF code never passes config.layer_norm_eps (1e-6) to them.
//
// Staging: one stage per transformer block, over all encoder stages in order; a stage's first block also runs that
// encoder stage's patch embedding (stage 0's runs in embed()), its last block the stage LayerNorm. The decode head
// runs in finish(), so its layers belong to the last stage (as a classifier head does). The state passed between
// stages is {f_0, ..., f_{i-1}, tokens}: the finished feature maps (NCHW) the decoder will read, then the running
// tokens [B, h, w, C] of the current encoder stage (absent at an encoder-stage boundary, where the last feature map
// is the running state).
//
// Compressible layers (routed through Model::linear):
//   - every nn.Linear: query, key, value, attention.output.dense, mlp.dense1, mlp.dense2, decode_head.linear_c.i.proj;
//   - the 1x1 convolutions decode_head.linear_fuse (BatchNorm folded in, see fold_decoder_batch_norm) and
//     decode_head.classifier (low rank allowed: they are plain linear maps per pixel);
//   - the patch-embedding and spatial-reduction convolutions, run as linear layers on their im2col patches, with
//     quantization only (low_rank_allowed false, as for every conv with a kernel above 1x1 in this engine).
//     patch_embeddings.0 reads the image: role PatchEmbedding (its input is never activation-quantized); the later
//     patch embeddings read feature maps inside the network: role Hidden.
//   - The depthwise 3x3 convolutions are kept in float32: a depthwise conv is not a matrix product on its input
//     (each channel has its own 9 taps), so the engine's per-layer machinery (y = x Wᵀ overrides, input moments,
//     Hessians, low rank) does not apply to it. They are checkpoint tensors like the norms and biases, so export and
//     `lorq inspect` count them among the float parameters (b0: 20,480 weights + 2,048 biases, 0.6% of the model).
#include "lorq/models/segformer.h"

#include <ATen/ATen.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/models/registry.h"

namespace lorq {

namespace {

constexpr double kLayerNormEps = 1e-5;  // nn.LayerNorm's default; see the top of this file
constexpr double kBatchNormEps = 1e-5;  // nn.BatchNorm2d's default

const char* kBatchNormKeys[] = {"decode_head.batch_norm.weight", "decode_head.batch_norm.bias",
                                "decode_head.batch_norm.running_mean", "decode_head.batch_norm.running_var"};

std::string shape_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string join(const std::vector<int>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? "-" : "") + std::to_string(v[i]);
  return out;
}

at::Tensor layer_norm(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::layer_norm(x, {x.size(-1)}, w, b, kLayerNormEps);
}

}  // namespace

std::pair<at::Tensor, at::Tensor> fold_batch_norm(const at::Tensor& w, const at::Tensor& b, const at::Tensor& gamma,
                                                  const at::Tensor& beta, const at::Tensor& running_mean,
                                                  const at::Tensor& running_var, double eps) {
  const at::Tensor s = gamma.to(at::kDouble) / at::sqrt(running_var.to(at::kDouble) + eps);
  std::vector<int64_t> per_row(w.dim(), 1);
  per_row[0] = -1;
  const at::Tensor w_folded = (w.to(at::kDouble) * s.reshape(per_row)).to(at::kFloat).contiguous();
  const at::Tensor b_in = b.defined() ? b.to(at::kDouble) : at::zeros_like(s);
  const at::Tensor b_folded = (s * (b_in - running_mean.to(at::kDouble)) + beta.to(at::kDouble)).to(at::kFloat);
  return {w_folded, b_folded.contiguous()};
}

void Segformer::bind(const std::string& key, at::Tensor* slot, const std::vector<int64_t>& shape) {
  auto it = pending_.find(key);
  if (it == pending_.end()) throw Error(source_, "missing tensor '" + key + "'");
  if (it->second.sizes().vec() != shape)
    throw Error(source_,
                "tensor '" + key + "' has shape " + shape_str(it->second.sizes()) + ", expected " + shape_str(shape));
  *slot = it->second.to(at::kFloat).contiguous();
  pending_.erase(it);
  register_tensor(key, slot);
}

Segformer::Segformer(SegformerConfig config, std::map<std::string, at::Tensor> tensors, const std::string& source)
    : config_(std::move(config)), pending_(std::move(tensors)), source_(source) {
  const SegformerConfig& c = config_;
  const int n = c.num_encoder_blocks;
  if (c.num_labels < 1) throw Error(source_, "the config has no labels (id2label / num_labels)");
  if (static_cast<int>(config_.label_names.size()) < c.num_labels) config_.label_names.resize(c.num_labels);

  auto add_linear = [&](Linear& l, const std::string& name, std::vector<int64_t> shape, int stage, bool low_rank,
                        LayerRole role) {
    l.name = name;
    const int64_t out = shape[0];
    int64_t in = 1;
    for (size_t i = 1; i < shape.size(); ++i) in *= shape[i];
    bind(name + ".weight", &l.weight, shape);
    bind(name + ".bias", &l.bias, {out});
    register_linear({name, out, in, true, stage, low_rank, shape, role}, &l.bias);
  };
  auto add_norm = [&](Norm& norm, const std::string& name, int64_t dim) {
    bind(name + ".weight", &norm.weight, {dim});
    bind(name + ".bias", &norm.bias, {dim});
  };

  patch_embeds_.resize(n);
  stage_norms_.resize(n);
  stage_norm_points_.resize(n);
  linear_c_.resize(n);
  blocks_.resize(c.total_depth());
  int64_t in_channels = c.num_channels;
  int first_block = 0;
  for (int s = 0; s < n; ++s) {
    const int64_t D = c.hidden_sizes[s], hidden = c.mlp_hidden(s), sr = c.sr_ratios[s];
    const std::string pe = "segformer.encoder.patch_embeddings." + std::to_string(s) + ".";
    PatchEmbed& p = patch_embeds_[s];
    p.kernel = c.patch_sizes[s];
    p.stride = c.strides[s];
    // Stage 0's patch embedding runs in embed() (stage -1); a later one runs at the start of its first block.
    add_linear(p.proj, pe + "proj", {D, in_channels, p.kernel, p.kernel}, s == 0 ? -1 : first_block, false,
               s == 0 ? LayerRole::PatchEmbedding : LayerRole::Hidden);
    add_norm(p.norm, pe + "layer_norm", D);
    for (int j = 0; j < c.depths[s]; ++j) {
      const int stage = first_block + j;
      Block& b = blocks_[stage];
      b.encoder_stage = s;
      b.index = j;
      const std::string bp = "segformer.encoder.block." + std::to_string(s) + "." + std::to_string(j) + ".";
      add_norm(b.ln1, bp + "layer_norm_1", D);
      add_linear(b.query, bp + "attention.self.query", {D, D}, stage, true, LayerRole::Hidden);
      if (sr > 1) {
        add_linear(b.sr, bp + "attention.self.sr", {D, D, sr, sr}, stage, false, LayerRole::Hidden);
        add_norm(b.sr_norm, bp + "attention.self.layer_norm", D);
      }
      add_linear(b.key, bp + "attention.self.key", {D, D}, stage, true, LayerRole::Hidden);
      add_linear(b.value, bp + "attention.self.value", {D, D}, stage, true, LayerRole::Hidden);
      add_linear(b.out, bp + "attention.output.dense", {D, D}, stage, true, LayerRole::Hidden);
      add_norm(b.ln2, bp + "layer_norm_2", D);
      add_linear(b.dense1, bp + "mlp.dense1", {hidden, D}, stage, true, LayerRole::Hidden);
      bind(bp + "mlp.dwconv.dwconv.weight", &b.dw_weight, {hidden, 1, 3, 3});
      bind(bp + "mlp.dwconv.dwconv.bias", &b.dw_bias, {hidden});
      add_linear(b.dense2, bp + "mlp.dense2", {D, hidden}, stage, true, LayerRole::Hidden);
      register_block_points(b, bp);
    }
    const int last = first_block + c.depths[s] - 1;
    const std::string norm = "segformer.encoder.layer_norm." + std::to_string(s);
    add_norm(stage_norms_[s], norm, D);
    // f_i is read by decode_head.linear_c.i and (i < n-1) by the next patch embedding: a LayerNorm output with one
    // linear reader only for the last stage. Per-channel folding (§8.5) rescales the LayerNorm for a single
    // consumer, so a shared output is quantized per tensor and names no consumer.
    stage_norm_points_[s] = norm + ".out";
    if (s == n - 1) {
      register_activation_point({stage_norm_points_[s], ActivationKind::LayerNormOutput,
                                 "decode_head.linear_c." + std::to_string(s) + ".proj", norm, last});
    } else {
      register_activation_point({stage_norm_points_[s], ActivationKind::PerTensor, "", "", last});
    }
    in_channels = D;
    first_block += c.depths[s];
  }

  const int last_stage = num_stages() - 1;
  const int64_t Dd = c.decoder_hidden_size;
  for (int s = 0; s < n; ++s)
    add_linear(linear_c_[s], "decode_head.linear_c." + std::to_string(s) + ".proj", {Dd, c.hidden_sizes[s]}, last_stage,
               true, LayerRole::Hidden);
  fold_decoder_batch_norm();
  add_linear(classifier_, "decode_head.classifier", {c.num_labels, Dd, 1, 1}, last_stage, true, LayerRole::Head);
  register_activation_point({fuse_in_, ActivationKind::PerTensor, linear_fuse_.name, "", last_stage});
  register_activation_point({classifier_in_, ActivationKind::PerTensor, classifier_.name, "", last_stage});

  pending_.erase("decode_head.batch_norm.num_batches_tracked");  // a training counter, unused in eval
  if (!pending_.empty())
    throw Error(source_, "unexpected tensor '" + pending_.begin()->first + "' (" + std::to_string(pending_.size()) +
                             " unused; does config.json describe this checkpoint?)");
}

// The BatchNorm after linear_fuse is folded into it when the model is built, exactly (float64 arithmetic): the
// fused layer is what the engine compresses and what runs, so it is registered under the checkpoint's name
// "decode_head.linear_fuse" with a new bias, and the batch_norm tensors are not kept. Keeping them registered beside
// the fused weight would make an export fold them a second time on reload (or let an edit of them be silently
// ignored). An export therefore holds the folded form (linear_fuse.weight + linear_fuse.bias, no batch_norm), which
// this constructor loads as it is; a Hugging Face checkpoint's linear_fuse has no bias and a BatchNorm.
void Segformer::fold_decoder_batch_norm() {
  const SegformerConfig& c = config_;
  const int64_t Dd = c.decoder_hidden_size, n = c.num_encoder_blocks;
  const std::string name = "decode_head.linear_fuse";
  const std::vector<int64_t> shape{Dd, n * Dd, 1, 1};
  linear_fuse_.name = name;
  int bn_present = 0;
  for (const char* key : kBatchNormKeys) bn_present += pending_.count(key) > 0;
  auto take = [&](const std::string& key, const std::vector<int64_t>& s) {
    auto it = pending_.find(key);
    if (it == pending_.end()) throw Error(source_, "missing tensor '" + key + "'");
    if (it->second.sizes().vec() != s)
      throw Error(source_,
                  "tensor '" + key + "' has shape " + shape_str(it->second.sizes()) + ", expected " + shape_str(s));
    at::Tensor t = it->second.to(at::kFloat);
    pending_.erase(it);
    return t;
  };
  if (bn_present > 0) {
    const at::Tensor w = take(name + ".weight", shape);
    const at::Tensor b = pending_.count(name + ".bias") ? take(name + ".bias", {Dd}) : at::Tensor();
    const at::Tensor gamma = take(kBatchNormKeys[0], {Dd}), beta = take(kBatchNormKeys[1], {Dd});
    const at::Tensor mean = take(kBatchNormKeys[2], {Dd}), var = take(kBatchNormKeys[3], {Dd});
    if (!(var.min().item<float>() >= 0))
      throw Error(source_, "tensor 'decode_head.batch_norm.running_var' has negative or NaN values");
    std::tie(linear_fuse_.weight, linear_fuse_.bias) = fold_batch_norm(w, b, gamma, beta, mean, var, kBatchNormEps);
    register_tensor(name + ".weight", &linear_fuse_.weight);
    register_tensor(name + ".bias", &linear_fuse_.bias);
  } else {
    if (!pending_.count(name + ".bias"))
      throw Error(source_,
                  "missing tensor 'decode_head.batch_norm.weight' (a checkpoint without the decode head's "
                  "BatchNorm must hold it folded into 'decode_head.linear_fuse.bias')");
    bind(name + ".weight", &linear_fuse_.weight, shape);
    bind(name + ".bias", &linear_fuse_.bias, {Dd});
  }
  register_linear({name, Dd, n * Dd, true, num_stages() - 1, true, shape, LayerRole::Hidden}, &linear_fuse_.bias);
}

void Segformer::register_block_points(Block& b, const std::string& p) {
  const int stage = static_cast<int>(&b - blocks_.data());
  const bool sr = b.sr.weight.defined();
  BlockPoints& n = b.points;
  n = {p + "layer_norm_1.out",          sr ? p + "attention.self.layer_norm.out" : "",
       p + "attention.self.q",          p + "attention.self.k",
       p + "attention.self.softmax",    p + "attention.self.v",
       p + "attention.output.dense.in", p + "layer_norm_2.out",
       p + "mlp.dwconv.dwconv.in",      p + "mlp.dense2.in"};
  using K = ActivationKind;
  // layer_norm_1's output feeds query and the sr conv (or key and value): several readers, so per tensor and no
  // consumer (see the stage norms in the constructor); the same holds for the sr LayerNorm (key and value).
  register_activation_point({n.ln1_out, K::PerTensor, "", "", stage});
  if (sr) register_activation_point({n.sr_ln_out, K::PerTensor, "", "", stage});
  register_activation_point({n.q, K::PerTensor, "", "", stage});
  register_activation_point({n.k, K::PerTensor, "", "", stage});
  register_activation_point({n.softmax, K::Softmax, "", "", stage});
  register_activation_point({n.v, K::PerTensor, "", "", stage});
  register_activation_point({n.dense_in, K::PerTensor, b.out.name, "", stage});
  register_activation_point({n.ln2_out, K::LayerNormOutput, b.dense1.name, p + "layer_norm_2", stage});
  // The depthwise conv's input (dense1's output): quantized like any other operand, its weights stay float.
  register_activation_point({n.dwconv_in, K::PerTensor, "", "", stage});
  register_activation_point({n.dense2_in, K::PerTensor, b.dense2.name, "", stage});
}

at::Tensor Segformer::conv_as_linear(const Linear& l, const at::Tensor& x, int kernel, int stride, int padding) {
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3), out = l.weight.size(0);
  const int64_t Ho = (H + 2 * padding - kernel) / stride + 1, Wo = (W + 2 * padding - kernel) / stride + 1;
  if (H + 2 * padding < kernel || W + 2 * padding < kernel)
    throw Error(l.name + ": input " + std::to_string(H) + "x" + std::to_string(W) + " is smaller than the " +
                std::to_string(kernel) + "x" + std::to_string(kernel) + " kernel (the image is too small)");
  // im2col's columns are ordered (channel, kh, kw), as the conv weight flattened to [out, C*k*k].
  const at::Tensor cols = at::im2col(x, {kernel, kernel}, {1, 1}, {padding, padding}, {stride, stride});
  const at::Tensor y = linear(l.name, cols.transpose(1, 2), l.weight.reshape({out, -1}), l.bias);
  return y.reshape({B, Ho, Wo, out});
}

at::Tensor Segformer::patch_embed(int s, const at::Tensor& x) {
  const PatchEmbed& p = patch_embeds_.at(s);
  return layer_norm(conv_as_linear(p.proj, x, p.kernel, p.stride, p.kernel / 2), p.norm.weight, p.norm.bias);
}

StageState Segformer::embed(const at::Tensor& images) {
  const int64_t C = config_.num_channels;
  if (images.dim() != 4 || images.size(1) != C)
    throw Error("model input must be [B, " + std::to_string(C) + ", H, W], got " + shape_str(images.sizes()));
  return {patch_embed(0, images)};
}

at::Tensor Segformer::attention(Block& b, const at::Tensor& x, int64_t h, int64_t w) {
  const int s = b.encoder_stage;
  const int64_t B = x.size(0), N = x.size(1), D = x.size(2), H = config_.num_attention_heads[s], hd = D / H;
  const BlockPoints& pt = b.points;
  auto heads = [&](const at::Tensor& t) { return t.reshape({B, -1, H, hd}).permute({0, 2, 1, 3}); };
  at::Tensor q = activation(pt.q, heads(linear(b.query.name, x, b.query.weight, b.query.bias)));
  at::Tensor kv_in = x;
  if (b.sr.weight.defined()) {
    const int sr = config_.sr_ratios[s];
    if (h < sr || w < sr)
      throw Error(b.sr.name + ": a " + std::to_string(h) + "x" + std::to_string(w) +
                  " feature map is smaller than "
                  "the spatial-reduction ratio " +
                  std::to_string(sr) + " (the image is too small)");
    const at::Tensor reduced = conv_as_linear(b.sr, x.transpose(1, 2).reshape({B, D, h, w}), sr, sr, 0);
    kv_in = activation(pt.sr_ln_out, layer_norm(reduced.reshape({B, -1, D}), b.sr_norm.weight, b.sr_norm.bias));
  }
  at::Tensor k = activation(pt.k, heads(linear(b.key.name, kv_in, b.key.weight, b.key.bias)));
  at::Tensor v = activation(pt.v, heads(linear(b.value.name, kv_in, b.value.weight, b.value.bias)));
  at::Tensor scores = parallel_matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
  at::Tensor probs = activation(pt.softmax, at::softmax(scores, -1));
  at::Tensor context = parallel_matmul(probs, v).permute({0, 2, 1, 3}).reshape({B, N, D});
  context = activation(pt.dense_in, context);
  return linear(b.out.name, context, b.out.weight, b.out.bias);
}

at::Tensor Segformer::mix_ffn(Block& b, const at::Tensor& x, int64_t h, int64_t w) {
  const BlockPoints& pt = b.points;
  const int64_t B = x.size(0), hidden = b.dw_weight.size(0);
  at::Tensor y = activation(pt.dwconv_in, linear(b.dense1.name, x, b.dense1.weight, b.dense1.bias));
  y = at::conv2d(y.transpose(1, 2).reshape({B, hidden, h, w}), b.dw_weight, b.dw_bias, {1, 1}, {1, 1}, {1, 1}, hidden);
  y = activation(pt.dense2_in, at::gelu(y.flatten(2).transpose(1, 2)));
  return linear(b.dense2.name, y, b.dense2.weight, b.dense2.bias);
}

StageState Segformer::run_stage(int stage, const StageState& state) {
  Block& b = blocks_.at(stage);
  const int s = b.encoder_stage;
  const bool embeds = b.index == 0 && s > 0;  // the first block of a later encoder stage embeds f_{s-1}
  const size_t expected = embeds ? s : s + 1;
  if (state.size() != expected)
    throw Error("segformer stage " + std::to_string(stage) + ": expected a state of " + std::to_string(expected) +
                " tensors, got " + std::to_string(state.size()));
  StageState out(state.begin(), embeds ? state.end() : state.end() - 1);
  const at::Tensor tokens = embeds ? patch_embed(s, state.back()) : state.back();
  const int64_t B = tokens.size(0), h = tokens.size(1), w = tokens.size(2), D = tokens.size(3);
  const BlockPoints& pt = b.points;

  at::Tensor x = tokens.reshape({B, h * w, D});
  x = attention(b, activation(pt.ln1_out, layer_norm(x, b.ln1.weight, b.ln1.bias)), h, w) + x;
  x = mix_ffn(b, activation(pt.ln2_out, layer_norm(x, b.ln2.weight, b.ln2.bias)), h, w) + x;
  if (b.index == config_.depths[s] - 1) {
    const Norm& norm = stage_norms_[s];
    const at::Tensor f = activation(stage_norm_points_[s], layer_norm(x, norm.weight, norm.bias));
    out.push_back(f.reshape({B, h, w, D}).permute({0, 3, 1, 2}).contiguous());
  } else {
    out.push_back(x.reshape({B, h, w, D}));
  }
  return out;
}

ModelOutputs Segformer::finish(const StageState& state) {
  const int n = config_.num_encoder_blocks;
  if (static_cast<int>(state.size()) != n)
    throw Error("segformer decode head: expected " + std::to_string(n) + " feature maps, got " +
                std::to_string(state.size()));
  const int64_t B = state[0].size(0), H0 = state[0].size(2), W0 = state[0].size(3);
  const int64_t Dd = config_.decoder_hidden_size, K = config_.num_labels;
  // Built channels-last ([B, H0, W0, n*Dd]) so that the 1x1 convs are linear layers on contiguous rows. linear_c's
  // output [B, h*w, Dd] is already the channels-last layout of HF's [B, Dd, h, w], and upsampling a channels-last
  // tensor keeps that layout, so the concatenation copies whole rows. Stage 0 is already at the target size, where
  // HF's interpolation is the identity.
  std::vector<at::Tensor> parts(n);
  for (int i = 0; i < n; ++i) {
    const at::Tensor& f = state[i];
    const int64_t h = f.size(2), w = f.size(3);
    const Linear& l = linear_c_[i];
    at::Tensor y = linear(l.name, f.flatten(2).transpose(1, 2), l.weight, l.bias).reshape({B, h, w, Dd});
    if (h != H0 || w != W0)
      y = at::upsample_bilinear2d(y.permute({0, 3, 1, 2}), {H0, W0}, /*align_corners=*/false).permute({0, 2, 3, 1});
    parts[n - 1 - i] = y;  // HF concatenates all_hidden_states[::-1]
  }
  at::Tensor x = activation(fuse_in_, at::cat(parts, -1));
  x = linear(linear_fuse_.name, x, linear_fuse_.weight.reshape({Dd, -1}), linear_fuse_.bias);
  x = activation(classifier_in_, at::relu(x));
  x = linear(classifier_.name, x, classifier_.weight.reshape({K, Dd}), classifier_.bias);
  ModelOutputs out;
  out.add("logits", x.permute({0, 3, 1, 2}).contiguous());
  return out;
}

std::vector<at::Tensor> Segformer::parameters() const {
  std::vector<at::Tensor> out;
  for (const auto& [key, t] : named_tensors()) out.push_back(t);
  return out;
}

std::unique_ptr<Segformer> Segformer::create_random(const SegformerConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  std::map<std::string, at::Tensor> t;
  const double std = 0.02;  // SegformerConfig.initializer_range
  auto conv_or_linear = [&](const std::string& name, std::vector<int64_t> shape) {
    t[name + ".weight"] = at::randn(shape) * std;
    t[name + ".bias"] = at::zeros({shape[0]});
  };
  auto norm = [&](const std::string& name, int64_t d) {
    t[name + ".weight"] = at::ones({d});
    t[name + ".bias"] = at::zeros({d});
  };
  int64_t in = c.num_channels;
  for (int s = 0; s < c.num_encoder_blocks; ++s) {
    const int64_t D = c.hidden_sizes[s], k = c.patch_sizes[s], sr = c.sr_ratios[s], hidden = c.mlp_hidden(s);
    const std::string pe = "segformer.encoder.patch_embeddings." + std::to_string(s) + ".";
    conv_or_linear(pe + "proj", {D, in, k, k});
    norm(pe + "layer_norm", D);
    for (int j = 0; j < c.depths[s]; ++j) {
      const std::string b = "segformer.encoder.block." + std::to_string(s) + "." + std::to_string(j) + ".";
      norm(b + "layer_norm_1", D);
      for (const char* l :
           {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"})
        conv_or_linear(b + l, {D, D});
      if (sr > 1) {
        conv_or_linear(b + "attention.self.sr", {D, D, sr, sr});
        norm(b + "attention.self.layer_norm", D);
      }
      norm(b + "layer_norm_2", D);
      conv_or_linear(b + "mlp.dense1", {hidden, D});
      conv_or_linear(b + "mlp.dwconv.dwconv", {hidden, 1, 3, 3});
      conv_or_linear(b + "mlp.dense2", {D, hidden});
    }
    norm("segformer.encoder.layer_norm." + std::to_string(s), D);
    conv_or_linear("decode_head.linear_c." + std::to_string(s) + ".proj", {c.decoder_hidden_size, D});
    in = D;
  }
  // linear_fuse directly in its folded form: a fresh BatchNorm (weight 1, bias 0, mean 0, var 1) only rescales it.
  conv_or_linear("decode_head.linear_fuse",
                 {c.decoder_hidden_size, c.num_encoder_blocks * c.decoder_hidden_size, 1, 1});
  conv_or_linear("decode_head.classifier", {c.num_labels, c.decoder_hidden_size, 1, 1});
  return std::make_unique<Segformer>(c, std::move(t), "<random init>");
}

std::string Segformer::architecture() const {
  // The MiT encoders of the SegFormer paper (all with heads 1-2-5-8, sr 8-4-2-1, decoder 256 or 768).
  struct Variant {
    const char* name;
    std::vector<int> hidden, depths;
  };
  static const Variant variants[] = {
      {"segformer-b0", {32, 64, 160, 256}, {2, 2, 2, 2}},   {"segformer-b1", {64, 128, 320, 512}, {2, 2, 2, 2}},
      {"segformer-b2", {64, 128, 320, 512}, {3, 4, 6, 3}},  {"segformer-b3", {64, 128, 320, 512}, {3, 4, 18, 3}},
      {"segformer-b4", {64, 128, 320, 512}, {3, 8, 27, 3}}, {"segformer-b5", {64, 128, 320, 512}, {3, 6, 40, 3}},
  };
  for (const Variant& v : variants)
    if (v.hidden == config_.hidden_sizes && v.depths == config_.depths) return v.name;
  return "segformer-custom-" + join(config_.hidden_sizes) + "-d" + join(config_.depths);
}

std::string Segformer::family() const { return "Hugging Face SegFormer"; }

std::map<std::string, int64_t> Segformer::dimensions() const {
  return {{"encoder_stages", config_.num_encoder_blocks},       {"depth", config_.total_depth()},
          {"decoder_hidden_size", config_.decoder_hidden_size}, {"num_labels", config_.num_labels},
          {"input_height", config_.preprocessing.input_height}, {"input_width", config_.preprocessing.input_width}};
}

std::string Segformer::config_json() const {
  return config_.source_json.empty() ? segformer_config_to_json(config_) : config_.source_json;
}

std::unique_ptr<Model> Segformer::clone() const {
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : named_tensors()) tensors[key] = t.clone();
  return std::make_unique<Segformer>(config_, std::move(tensors), source_);
}

Architecture segformer_architecture() {
  Architecture a;
  a.name = "Hugging Face SegFormer (SegformerForSemanticSegmentation)";
  a.model_types = {"segformer"};
  a.shapes = [](const TensorShapes& s) {
    return s.count("segformer.encoder.patch_embeddings.0.proj.weight") > 0 &&
           s.count("decode_head.classifier.weight") > 0;
  };
  a.build = [](const CheckpointInfo& info, std::map<std::string, at::Tensor> tensors) -> std::unique_ptr<Model> {
    // The attention head counts and the strides are not in the tensors: guessing them would compute another network.
    if (info.files.config.empty())
      throw Error(info.files.weights,
                  "a SegFormer checkpoint needs its config.json beside it (the attention heads "
                  "and strides are not in the tensors)");
    SegformerConfig config = parse_segformer_config(info.config_text, info.files.config);
    config.preprocessing.input_channels = config.num_channels;
    if (!info.files.preprocessor_config.empty())
      parse_segformer_preprocessor(read_text_file(info.files.preprocessor_config), info.files.preprocessor_config,
                                   config);
    if (config.num_labels < 1) {
      // A config without id2label / num_labels: the classifier says how many classes there are.
      auto cls = info.shapes.find("decode_head.classifier.weight");
      if (cls != info.shapes.end() && !cls->second.empty()) config.num_labels = static_cast<int>(cls->second[0]);
    }
    return std::make_unique<Segformer>(std::move(config), std::move(tensors), info.files.weights);
  };
  return a;
}

}  // namespace lorq
