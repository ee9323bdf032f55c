// SegFormer: an independent slow reference on random odd shapes (conv2d, per-head loops, BatchNorm unfolded,
// hand-written bilinear upsampling), the Hugging Face goldens of segformer_micro_random, staging, clone, overrides,
// activation points, BatchNorm folding, loading and its errors, and the post-processing.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>

#include "lorq/common/error.h"
#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/model.h"
#include "lorq/models/segformer.h"
#include "lorq/quant/activation_quant.h"
#include "lorq/tasks/segmentation_post.h"
#include "shared_data.h"

using namespace lorq;

namespace {

using TensorMap = std::map<std::string, at::Tensor>;

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// A small odd-shaped SegFormer: 3 encoder stages, one with sr 1, non-power-of-two widths, 2 blocks in one stage.
SegformerConfig odd_config() {
  SegformerConfig c;
  c.num_channels = 3;
  c.num_encoder_blocks = 3;
  c.depths = {1, 2, 1};
  c.sr_ratios = {4, 2, 1};
  c.hidden_sizes = {6, 10, 15};
  c.patch_sizes = {7, 3, 3};
  c.strides = {4, 2, 2};
  c.num_attention_heads = {1, 2, 3};
  c.mlp_ratios = {4, 3, 2};
  c.decoder_hidden_size = 9;
  c.num_labels = 5;
  return c;
}

// Random tensors under the Hugging Face names, with a non-trivial BatchNorm (not yet folded).
TensorMap random_checkpoint(const SegformerConfig& c, uint64_t seed) {
  at::manual_seed(seed);
  TensorMap t;
  auto r = [](std::vector<int64_t> shape, double std) { return at::randn(shape) * std; };
  auto linear = [&](const std::string& name, std::vector<int64_t> shape) {
    int64_t fan_in = 1;
    for (size_t i = 1; i < shape.size(); ++i) fan_in *= shape[i];
    t[name + ".weight"] = r(shape, 1.0 / std::sqrt(double(fan_in)));
    t[name + ".bias"] = r({shape[0]}, 0.1);
  };
  auto norm = [&](const std::string& name, int64_t d) {
    t[name + ".weight"] = 1 + r({d}, 0.2);
    t[name + ".bias"] = r({d}, 0.2);
  };
  int64_t in = c.num_channels;
  for (int s = 0; s < c.num_encoder_blocks; ++s) {
    const int64_t D = c.hidden_sizes[s], k = c.patch_sizes[s], sr = c.sr_ratios[s], hid = c.mlp_hidden(s);
    const std::string pe = "segformer.encoder.patch_embeddings." + std::to_string(s) + ".";
    linear(pe + "proj", {D, in, k, k});
    norm(pe + "layer_norm", D);
    for (int j = 0; j < c.depths[s]; ++j) {
      const std::string b = "segformer.encoder.block." + std::to_string(s) + "." + std::to_string(j) + ".";
      norm(b + "layer_norm_1", D);
      for (const char* l :
           {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"})
        linear(b + l, {D, D});
      if (sr > 1) {
        linear(b + "attention.self.sr", {D, D, sr, sr});
        norm(b + "attention.self.layer_norm", D);
      }
      norm(b + "layer_norm_2", D);
      linear(b + "mlp.dense1", {hid, D});
      linear(b + "mlp.dwconv.dwconv", {hid, 1, 3, 3});
      linear(b + "mlp.dense2", {D, hid});
    }
    norm("segformer.encoder.layer_norm." + std::to_string(s), D);
    linear("decode_head.linear_c." + std::to_string(s) + ".proj", {c.decoder_hidden_size, D});
    in = D;
  }
  const int64_t Dd = c.decoder_hidden_size;
  t["decode_head.linear_fuse.weight"] = r({Dd, c.num_encoder_blocks * Dd, 1, 1}, 0.3);
  norm("decode_head.batch_norm", Dd);
  t["decode_head.batch_norm.running_mean"] = r({Dd}, 0.3);
  t["decode_head.batch_norm.running_var"] = at::rand({Dd}) * 0.5 + 0.05;
  linear("decode_head.classifier", {c.num_labels, Dd, 1, 1});
  return t;
}

// Bilinear upsampling with align_corners false, written from its definition (source = (dst + 0.5)·in/out − 0.5,
// clamped at 0; the neighbour index clamped at the border).
at::Tensor reference_bilinear(const at::Tensor& x, int64_t H, int64_t W) {
  auto axis = [](int64_t in, int64_t out) {
    std::vector<int64_t> i0(out), i1(out);
    std::vector<double> l(out);
    for (int64_t o = 0; o < out; ++o) {
      double src = (o + 0.5) * double(in) / double(out) - 0.5;
      if (src < 0) src = 0;
      int64_t a = std::min<int64_t>(static_cast<int64_t>(std::floor(src)), in - 1);
      i0[o] = a;
      i1[o] = std::min<int64_t>(a + 1, in - 1);
      l[o] = src - a;
    }
    return std::make_tuple(at::tensor(i0), at::tensor(i1), at::tensor(l, at::kDouble));
  };
  auto [r0, r1, lr] = axis(x.size(2), H);
  auto [c0, c1, lc] = axis(x.size(3), W);
  at::Tensor rows = x.index_select(2, r0) * (1 - lr).view({1, 1, H, 1}) + x.index_select(2, r1) * lr.view({1, 1, H, 1});
  return rows.index_select(3, c0) * (1 - lc).view({1, 1, 1, W}) + rows.index_select(3, c1) * lc.view({1, 1, 1, W});
}

struct ReferenceOutputs {
  std::vector<at::Tensor> features;
  at::Tensor classifier_input, logits;
};

// The Hugging Face forward in float64, written independently of segformer.cpp: conv2d for every convolution,
// LayerNorm / GELU / softmax from their formulas, one attention head at a time, BatchNorm applied (not folded).
ReferenceOutputs reference_forward(const SegformerConfig& c, const TensorMap& raw, const at::Tensor& images) {
  auto T = [&](const std::string& k) { return raw.at(k).to(at::kDouble); };
  auto ln = [&](const at::Tensor& x, const std::string& k) {
    at::Tensor mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / at::sqrt(var + 1e-5) * T(k + ".weight") + T(k + ".bias");
  };
  auto lin = [&](const at::Tensor& x, const std::string& k) {
    return at::matmul(x, T(k + ".weight").t()) + T(k + ".bias");
  };
  auto gelu = [](const at::Tensor& x) { return 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))); };
  ReferenceOutputs out;
  at::Tensor x = images.to(at::kDouble);
  const int64_t B = x.size(0);
  for (int s = 0; s < c.num_encoder_blocks; ++s) {
    const int64_t D = c.hidden_sizes[s], k = c.patch_sizes[s], sr = c.sr_ratios[s], hid = c.mlp_hidden(s);
    const int64_t stride = c.strides[s], pad = k / 2, one = 1;
    const int64_t heads = c.num_attention_heads[s], hd = D / heads;
    const std::string pe = "segformer.encoder.patch_embeddings." + std::to_string(s) + ".";
    at::Tensor y = at::conv2d(x, T(pe + "proj.weight"), T(pe + "proj.bias"), stride, pad);
    const int64_t h = y.size(2), w = y.size(3);
    at::Tensor t = ln(y.flatten(2).transpose(1, 2), pe + "layer_norm");
    for (int j = 0; j < c.depths[s]; ++j) {
      const std::string b = "segformer.encoder.block." + std::to_string(s) + "." + std::to_string(j) + ".";
      at::Tensor a = ln(t, b + "layer_norm_1");
      at::Tensor q = lin(a, b + "attention.self.query");
      at::Tensor kv = a;
      if (sr > 1) {
        at::Tensor red = at::conv2d(a.transpose(1, 2).reshape({B, D, h, w}), T(b + "attention.self.sr.weight"),
                                    T(b + "attention.self.sr.bias"), sr);
        kv = ln(red.flatten(2).transpose(1, 2), b + "attention.self.layer_norm");
      }
      at::Tensor key = lin(kv, b + "attention.self.key"), val = lin(kv, b + "attention.self.value");
      at::Tensor ctx = at::zeros_like(q);
      for (int64_t hh = 0; hh < heads; ++hh) {
        at::Tensor qh = q.slice(2, hh * hd, (hh + 1) * hd), kh = key.slice(2, hh * hd, (hh + 1) * hd);
        at::Tensor sc = at::matmul(qh, kh.transpose(1, 2)) / std::sqrt(double(hd));
        sc = at::exp(sc - std::get<0>(sc.max(-1, true)));
        sc = sc / sc.sum(-1, true);
        ctx.slice(2, hh * hd, (hh + 1) * hd).copy_(at::matmul(sc, val.slice(2, hh * hd, (hh + 1) * hd)));
      }
      t = t + lin(ctx, b + "attention.output.dense");
      at::Tensor m = lin(ln(t, b + "layer_norm_2"), b + "mlp.dense1");
      m = at::conv2d(m.transpose(1, 2).reshape({B, hid, h, w}), T(b + "mlp.dwconv.dwconv.weight"),
                     T(b + "mlp.dwconv.dwconv.bias"), one, one, one, hid);
      t = t + lin(gelu(m.flatten(2).transpose(1, 2)), b + "mlp.dense2");
    }
    x = ln(t, "segformer.encoder.layer_norm." + std::to_string(s)).transpose(1, 2).reshape({B, D, h, w});
    out.features.push_back(x);
  }
  const int64_t H0 = out.features[0].size(2), W0 = out.features[0].size(3), Dd = c.decoder_hidden_size;
  std::vector<at::Tensor> parts;
  for (int s = c.num_encoder_blocks - 1; s >= 0; --s) {
    const at::Tensor& f = out.features[s];
    at::Tensor y = lin(f.flatten(2).transpose(1, 2), "decode_head.linear_c." + std::to_string(s) + ".proj");
    parts.push_back(reference_bilinear(y.transpose(1, 2).reshape({B, Dd, f.size(2), f.size(3)}), H0, W0));
  }
  at::Tensor z = at::conv2d(at::cat(parts, 1), T("decode_head.linear_fuse.weight"));
  auto per_channel = [&](const std::string& k) { return T(k).view({1, -1, 1, 1}); };
  z = (z - per_channel("decode_head.batch_norm.running_mean")) /
          at::sqrt(per_channel("decode_head.batch_norm.running_var") + 1e-5) *
          per_channel("decode_head.batch_norm.weight") +
      per_channel("decode_head.batch_norm.bias");
  out.classifier_input = at::relu(z);
  out.logits = at::conv2d(out.classifier_input, T("decode_head.classifier.weight"), T("decode_head.classifier.bias"));
  return out;
}

// The classifier's input as the model computed it, NCHW.
at::Tensor classifier_input(Model& m, const at::Tensor& images) {
  at::Tensor seen;
  m.set_observer({"decode_head.classifier"},
                 [&](const std::string&, const at::Tensor& in, const at::Tensor&) { seen = in.clone(); });
  m.forward(images);
  m.clear_observer();
  return seen.permute({0, 3, 1, 2});
}

StageState run_encoder(Model& m, const at::Tensor& images) {
  StageState x = m.embed(images);
  for (int i = 0; i < m.num_stages(); ++i) x = m.run_stage(i, x);
  return x;
}

TensorMap read_golden(const std::string& path) {
  return read_all_tensors(SafetensorsFile::open(path), /*to_float=*/false);
}

std::string temp_dir(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

std::string micro_dir() { return testdata::shared_path("models/segformer_micro_random"); }

}  // namespace

TEST(Segformer, MatchesSlowReferenceOnOddShapes) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  const TensorMap raw = random_checkpoint(c, 11);
  Segformer m(c, raw, "<random>");
  for (auto [H, W] : {std::pair<int64_t, int64_t>{37, 29}, {64, 48}, {33, 70}}) {
    const at::Tensor images = at::randn({2, 3, H, W});
    const ReferenceOutputs ref = reference_forward(c, raw, images);
    const StageState features = run_encoder(m, images);
    ASSERT_EQ(features.size(), 3u);
    for (int s = 0; s < 3; ++s) EXPECT_LT(max_abs(features[s], ref.features[s]), 2e-5) << "stage " << s;
    const at::Tensor logits = m.forward(images).logits();
    ASSERT_EQ(logits.sizes(), ref.logits.sizes());
    // The BatchNorm folded into linear_fuse gives the unfolded network's outputs within float32 noise.
    EXPECT_LT(max_abs(classifier_input(m, images), ref.classifier_input), 2e-5) << H << "x" << W;
    EXPECT_LT(max_abs(logits, ref.logits), 2e-5) << H << "x" << W;
  }
}

TEST(Segformer, BatchNormFoldingIsExact) {
  c10::NoGradGuard ng;
  at::manual_seed(3);
  for (auto [out, in, hw] : {std::tuple<int64_t, int64_t, int64_t>{7, 13, 5}, {1, 3, 1}, {33, 64, 9}}) {
    const at::Tensor w = at::randn({out, in, 1, 1}, at::kDouble), x = at::randn({2, in, hw, hw + 2}, at::kDouble);
    const at::Tensor gamma = at::randn({out}, at::kDouble), beta = at::randn({out}, at::kDouble);
    const at::Tensor mean = at::randn({out}, at::kDouble), var = at::rand({out}, at::kDouble) + 0.01;
    for (bool with_bias : {false, true}) {
      const at::Tensor b = with_bias ? at::randn({out}, at::kDouble) : at::Tensor();
      const at::Tensor unfolded = at::batch_norm(at::conv2d(x, w, b), gamma, beta, mean, var, false, 0.0, 1e-5, false);
      auto [wf, bf] = fold_batch_norm(w, b, gamma, beta, mean, var, 1e-5);
      ASSERT_EQ(wf.sizes(), w.sizes());
      ASSERT_EQ(wf.scalar_type(), at::kFloat);
      const at::Tensor folded = at::conv2d(x, wf.to(at::kDouble), bf.to(at::kDouble));
      // The only difference is the folded parameters' rounding to float32.
      const double scale = unfolded.abs().max().item<double>();
      EXPECT_LT(max_abs(folded, unfolded), 1e-6 * std::max(1.0, scale) * std::sqrt(double(in)));
    }
  }
}

TEST(Segformer, StagedExecutionEqualsForward) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  Segformer m(c, random_checkpoint(c, 5), "<random>");
  EXPECT_EQ(m.num_stages(), 4);
  const at::Tensor images = at::randn({3, 3, 41, 35});
  const at::Tensor full = m.forward(images).logits();
  std::vector<StageState> inputs{m.embed(images)};
  for (int i = 0; i < m.num_stages(); ++i) inputs.push_back(m.run_stage(i, inputs.back()));
  EXPECT_TRUE(at::equal(m.finish(inputs.back()).logits(), full));
  for (int i = 0; i < m.num_stages(); ++i) EXPECT_TRUE(at::equal(m.run_from(i, inputs[i]).logits(), full)) << i;
  // Batch slices of a state run on their own give the same rows.
  const at::Tensor part = m.run_from(2, slice_batch(inputs[2], 1, 3)).logits();
  EXPECT_LT(max_abs(part, full.slice(0, 1, 3)), 1e-5);
  EXPECT_THROW(m.run_stage(2, inputs[0]), Error);  // a state of the wrong stage
  EXPECT_THROW(m.forward(at::randn({1, 4, 32, 32})), Error);
  EXPECT_THROW(m.forward(at::randn({1, 3, 8, 8})), Error);  // too small for the first sr conv
}

TEST(Segformer, LayersRunInTheirStageAndPointsAreReached) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  Segformer m(c, random_checkpoint(c, 6), "<random>");
  const at::Tensor images = at::randn({1, 3, 40, 40});
  std::vector<StageState> inputs{m.embed(images)};
  for (int i = 0; i < m.num_stages(); ++i) inputs.push_back(m.run_stage(i, inputs.back()));

  // 7 linear layers per block (6 with sr 1), 2 patch embeddings after the first, 3 linear_c, fuse, classifier.
  EXPECT_EQ(m.linear_layers().size(), size_t(1 + 7 + 1 + 7 + 7 + 1 + 6 + 3 + 2));
  std::set<std::string> names;
  for (const LinearLayerInfo& l : m.linear_layers()) {
    EXPECT_TRUE(names.insert(l.name).second) << l.name;
    EXPECT_EQ(m.weight(l.name).sizes(), (at::IntArrayRef{l.out_features, l.in_features}));
    EXPECT_EQ(m.tensor(l.name + ".weight").sizes().vec(), l.weight_shape);
    EXPECT_TRUE(l.has_bias) << l.name;
    EXPECT_EQ(l.low_rank_allowed, l.weight_shape.size() == 2 || l.weight_shape[2] == 1) << l.name;
    // The stage a layer names must re-run it: run_from(stage) (or the whole forward for -1) calls it.
    bool called = false;
    m.set_observer({l.name}, [&](const std::string&, const at::Tensor&, const at::Tensor&) { called = true; });
    if (l.stage < 0) {
      m.forward(images);
    } else {
      m.run_from(l.stage, inputs[l.stage]);
    }
    EXPECT_TRUE(called) << l.name << " stage " << l.stage;
    m.clear_observer();
  }
  EXPECT_EQ(m.layer("segformer.encoder.patch_embeddings.0.proj").role, LayerRole::PatchEmbedding);
  EXPECT_EQ(m.layer("segformer.encoder.patch_embeddings.1.proj").role, LayerRole::Hidden);
  EXPECT_EQ(m.layer("decode_head.classifier").role, LayerRole::Head);
  EXPECT_EQ(m.layer("segformer.encoder.block.0.0.attention.self.sr").in_features, 6 * 4 * 4);

  // Every activation point is reached from its stage, exactly once per forward; an identity hook changes nothing.
  const at::Tensor base = m.forward(images).logits();
  for (const ActivationPoint& p : m.activation_points()) {
    int calls = 0;
    m.set_activation_hook(p.name, [&](const at::Tensor& x) {
      ++calls;
      return x;
    });
    EXPECT_TRUE(at::equal(m.run_from(p.stage, inputs[p.stage]).logits(), base)) << p.name;
    EXPECT_EQ(calls, 1) << p.name;
    m.clear_activation_hooks();
    if (!p.consumer.empty()) {
      EXPECT_NO_THROW(m.layer(p.consumer)) << p.name;
    }
    if (p.kind == ActivationKind::LayerNormOutput) {
      EXPECT_NO_THROW(m.tensor(p.norm + ".weight")) << p.name;
      EXPECT_EQ(m.layer(p.consumer).in_features, m.tensor(p.norm + ".weight").size(0)) << p.name;
    }
  }
  EXPECT_EQ(m.activation_point("segformer.encoder.block.1.1.layer_norm_2.out").consumer,
            "segformer.encoder.block.1.1.mlp.dense1");
  EXPECT_EQ(m.activation_point("segformer.encoder.layer_norm.2.out").kind, ActivationKind::LayerNormOutput);
  EXPECT_EQ(m.activation_point("segformer.encoder.layer_norm.1.out").kind, ActivationKind::PerTensor);
  // A hook that changes a value changes the output.
  m.set_activation_hook("segformer.encoder.block.1.0.mlp.dense2.in", [](const at::Tensor& x) { return x * 0.5; });
  EXPECT_GT(max_abs(m.forward(images).logits(), base), 1e-4);
}

TEST(Segformer, LayerNormFoldingKeepsTheFunctionAndActivationQuantizationRuns) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  Segformer m(c, random_checkpoint(c, 12), "<random>");
  std::unique_ptr<Model> fresh = m.clone();
  const at::Tensor images = at::randn({4, 3, 40, 40});
  const at::Tensor base = m.forward(images).logits();
  // §8.5 with an arbitrary per-channel quantizer on every LayerNormOutput point leaves the float function unchanged
  // only if the point's consumer is its LayerNorm's only reader (a shared LayerNorm must not be declared so).
  int folded = 0;
  for (const ActivationPoint& p : m.activation_points()) {
    if (p.kind != ActivationKind::LayerNormOutput) continue;
    const int64_t C = m.tensor(p.norm + ".weight").size(0);
    ActivationQuantizer q;
    q.type = ActQuantizerType::PerChannel;
    q.bits = 4;
    q.scale = at::rand({C}) + 0.1;
    q.zero_point = at::randint(0, 16, {C}).to(at::kFloat);
    fold_layernorm_quantizer(m, p, q);
    ++folded;
  }
  EXPECT_EQ(folded, 4 + 1);  // layer_norm_2 of the 4 blocks, the last stage's LayerNorm
  EXPECT_LT(max_abs(m.forward(images).logits(), base), 1e-4 * std::max(1.0, base.abs().max().item<double>()));

  // Steps 8-10 at 4 bits (per-channel LayerNorm outputs folded, ridge correction) run on the segmenter.
  ActQuantSettings s;
  s.bits = 4;
  s.num_images = 4;
  const ActivationQuantization aq = quantize_activations(*fresh, images, s);
  EXPECT_EQ(aq.quantizers.size(), fresh->activation_points().size());
  EXPECT_EQ(aq.folded_norms.size(), 5u);
  EXPECT_FALSE(aq.corrected_layers.empty());
  const at::Tensor y = fresh->forward(images).logits();
  EXPECT_TRUE(at::isfinite(y).all().item<bool>());
  EXPECT_GT(max_abs(y, base), 0);
}

TEST(Segformer, OverridesChangeTheOutputAndCloneIsIndependent) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  Segformer m(c, random_checkpoint(c, 7), "<random>");
  const at::Tensor images = at::randn({2, 3, 36, 44});
  const at::Tensor base = m.forward(images).logits();
  for (const std::string layer :
       {"segformer.encoder.patch_embeddings.1.proj", "segformer.encoder.block.0.0.attention.self.sr",
        "segformer.encoder.block.1.1.mlp.dense1", "decode_head.linear_fuse"}) {
    // The same product computed another way leaves the output alone; a changed weight changes it.
    m.set_linear_override(layer, [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
      return at::matmul(x.to(at::kDouble), w.to(at::kDouble).t()).add(b.to(at::kDouble)).to(at::kFloat);
    });
    EXPECT_LT(max_abs(m.forward(images).logits(), base), 1e-4) << layer;
    m.set_linear_override(
        layer, [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) { return at::linear(x, w * 0.9, b); });
    EXPECT_GT(max_abs(m.forward(images).logits(), base), 1e-3) << layer;
    m.clear_linear_overrides();
  }
  EXPECT_TRUE(at::equal(m.forward(images).logits(), base));

  std::unique_ptr<Model> copy = m.clone();
  EXPECT_TRUE(at::equal(copy->forward(images).logits(), base));
  EXPECT_EQ(copy->linear_layers().size(), m.linear_layers().size());
  EXPECT_EQ(copy->activation_points().size(), m.activation_points().size());
  copy->set_weight("segformer.encoder.block.1.0.attention.self.value",
                   copy->weight("segformer.encoder.block.1.0.attention.self.value") * 2);
  copy->set_bias("decode_head.linear_fuse", copy->bias("decode_head.linear_fuse") + 1);
  EXPECT_GT(max_abs(copy->forward(images).logits(), base), 1e-3);
  EXPECT_TRUE(at::equal(m.forward(images).logits(), base));
}

TEST(Segformer, SaveAndReloadTheFoldedForm) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  TensorMap raw = random_checkpoint(c, 8);
  // A converted hub checkpoint's int64 BatchNorm counter is accepted and ignored.
  raw["decode_head.batch_norm.num_batches_tracked"] = at::tensor(int64_t(1234));
  const std::string dir = temp_dir("segformer_roundtrip");
  std::ofstream(dir + "/config.json") << segformer_config_to_json(c);
  std::vector<std::pair<std::string, at::Tensor>> list(raw.begin(), raw.end());
  write_tensors(dir + "/model.safetensors", list);
  auto loaded = load_model(dir);
  ASSERT_EQ(loaded->task(), TaskKind::Segmentation);
  EXPECT_EQ(loaded->family(), "Hugging Face SegFormer");
  EXPECT_EQ(loaded->num_labels(), 5);
  EXPECT_EQ(loaded->label(4), "LABEL_4");
  const at::Tensor images = at::randn({1, 3, 40, 52});
  const at::Tensor ref = reference_forward(c, raw, images).logits;
  const at::Tensor y = loaded->forward(images).logits();
  EXPECT_LT(max_abs(y, ref), 2e-5);
  // What an export writes (the registered tensors: BatchNorm folded, no batch_norm keys) reloads to the same model.
  bool has_bn = false;
  for (const auto& [k, t] : loaded->named_tensors()) has_bn = has_bn || k.rfind("decode_head.batch_norm", 0) == 0;
  EXPECT_FALSE(has_bn);
  write_tensors(dir + "/model.safetensors", loaded->named_tensors());
  auto reloaded = load_model(dir);
  EXPECT_TRUE(at::equal(reloaded->forward(images).logits(), y));
  // A bare safetensors file is recognised by its tensors, but its heads and strides are unknown: a clear error.
  std::filesystem::remove(dir + "/config.json");
  try {
    load_model(dir + "/model.safetensors");
    ADD_FAILURE() << "a SegFormer without config.json loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs its config.json"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Segformer, CreateRandomTrainsThroughAutograd) {
  SegformerConfig c = odd_config();
  auto m = Segformer::create_random(c, 3);
  const at::Tensor images = at::randn({2, 3, 33, 41});
  for (at::Tensor& p : m->parameters()) p.requires_grad_(true);
  const at::Tensor logits = m->forward(images).logits();
  EXPECT_EQ(logits.sizes(), (at::IntArrayRef{2, 5, 9, 11}));
  logits.pow(2).mean().backward();
  // Every parameter receives a gradient (the patch-embedding and sr convs through im2col, the depthwise convs).
  for (const auto& [name, t] : m->named_tensors()) {
    ASSERT_TRUE(t.grad().defined()) << name;
  }
  EXPECT_GT(m->tensor("segformer.encoder.block.0.0.attention.self.sr.weight").grad().abs().sum().item<double>(), 0);
  EXPECT_GT(m->tensor("decode_head.linear_fuse.bias").grad().abs().sum().item<double>(), 0);
}

TEST(Segformer, LoadErrorsNameTheFile) {
  c10::NoGradGuard ng;
  const SegformerConfig c = odd_config();
  const std::string dir = temp_dir("segformer_errors");
  auto expect_error = [&](const std::string& needle, const std::string& file) {
    try {
      load_model(dir);
      ADD_FAILURE() << "no error, expected " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
    }
  };
  TensorMap raw = random_checkpoint(c, 9);
  auto write = [&](const TensorMap& t) {
    write_tensors(dir + "/model.safetensors", std::vector<std::pair<std::string, at::Tensor>>(t.begin(), t.end()));
  };
  std::ofstream(dir + "/config.json") << segformer_config_to_json(c);
  TensorMap partial = raw;
  partial.erase("decode_head.batch_norm.running_var");
  write(partial);
  expect_error("decode_head.batch_norm.running_var", "model.safetensors");
  TensorMap no_bn = raw;
  for (const char* k : {"decode_head.batch_norm.weight", "decode_head.batch_norm.bias",
                        "decode_head.batch_norm.running_mean", "decode_head.batch_norm.running_var"})
    no_bn.erase(k);
  write(no_bn);
  expect_error("decode_head.linear_fuse.bias", "model.safetensors");
  write(raw);
  SegformerConfig deeper = c;
  deeper.depths = {1, 3, 1};
  std::ofstream(dir + "/config.json") << segformer_config_to_json(deeper);
  expect_error("segformer.encoder.block.1.2.layer_norm_1.weight", "model.safetensors");
  SegformerConfig shallower = c;
  shallower.depths = {1, 1, 1};
  std::ofstream(dir + "/config.json") << segformer_config_to_json(shallower);
  expect_error("unexpected tensor 'segformer.encoder.block.1.1.", "model.safetensors");
  std::ofstream(dir + "/config.json") << R"({"model_type": "segformer", "depths": [1, 2]})";
  expect_error("'depths' has 2 entries but num_encoder_blocks is 4", "config.json");
  std::ofstream(dir + "/config.json") << R"({"model_type": "segformer", "hidden_act": "relu"})";
  expect_error("hidden_act", "config.json");
  std::ofstream(dir + "/config.json") << segformer_config_to_json(c);
  std::ofstream(dir + "/preprocessor_config.json") << R"({"size": {"height": 0, "width": 64}})";
  expect_error("'size' must be positive", "preprocessor_config.json");
  std::filesystem::remove_all(dir);
}

TEST(Segformer, ConfigAndPreprocessorParsing) {
  const SegformerConfig c = parse_segformer_config(
      R"({"model_type": "segformer", "num_encoder_blocks": 2, "depths": [1, 1], "sr_ratios": [2, 1],
          "hidden_sizes": [8, 12], "patch_sizes": [7, 3], "strides": [4, 2], "num_attention_heads": [1, 3],
          "mlp_ratios": [4, 2], "decoder_hidden_size": 16, "id2label": {"0": "wall", "2": "bed ", "1": "sky"}})",
      "cfg.json");
  EXPECT_EQ(c.num_labels, 3);
  EXPECT_EQ(c.label_names, (std::vector<std::string>{"wall", "sky", "bed "}));
  EXPECT_EQ(c.total_depth(), 2);
  EXPECT_EQ(c.mlp_hidden(1), 24);
  EXPECT_EQ(c.preprocessing.input_height, 512);
  EXPECT_EQ(c.preprocessing.crop_mode, "squash");
  SegformerConfig p = c;
  parse_segformer_preprocessor(R"({"size": {"height": 480, "width": 640}, "image_mean": [0.5, 0.5, 0.5],
                                   "image_std": [0.25, 0.5, 1.0], "resample": 2})",
                               "pp.json", p);
  EXPECT_EQ(p.preprocessing.input_height, 480);
  EXPECT_EQ(p.preprocessing.input_width, 640);
  EXPECT_EQ(p.preprocessing.interpolation, "bilinear");
  EXPECT_FLOAT_EQ(p.preprocessing.std[0], 0.25f);
  parse_segformer_preprocessor(R"({"size": 256, "do_normalize": false})", "pp.json", p);  // older configs
  EXPECT_EQ(p.preprocessing.input_width, 256);
  EXPECT_FLOAT_EQ(p.preprocessing.mean[1], 0.f);
  EXPECT_THROW(parse_segformer_preprocessor(R"({"do_resize": false})", "pp.json", p), Error);
  EXPECT_THROW(parse_segformer_preprocessor(R"({"rescale_factor": 1.0})", "pp.json", p), Error);
  EXPECT_THROW(parse_segformer_config(R"({"id2label": {"x": "a"}})", "cfg.json"), Error);
  EXPECT_THROW(
      parse_segformer_config(R"({"hidden_sizes": [8, 12, 15, 16], "num_attention_heads": [3, 3, 3, 3]})", "cfg.json"),
      Error);
  // The JSON writer round-trips.
  const SegformerConfig back = parse_segformer_config(segformer_config_to_json(c), "back.json");
  EXPECT_EQ(back.hidden_sizes, c.hidden_sizes);
  EXPECT_EQ(back.label_names, c.label_names);
  EXPECT_EQ(back.sr_ratios, c.sr_ratios);
}

TEST(Segformer, LabelMapUpsamplesThenTakesTheArgmax) {
  c10::NoGradGuard ng;
  at::manual_seed(4);
  const at::Tensor logits = at::randn({2, 5, 7, 9});
  const at::Tensor labels = segmentation_label_map(logits, 23, 31);
  ASSERT_EQ(labels.sizes(), (at::IntArrayRef{2, 23, 31}));
  EXPECT_TRUE(at::equal(labels, reference_bilinear(logits.to(at::kDouble), 23, 31).argmax(1)));
  EXPECT_TRUE(at::equal(segmentation_label_map(logits[1], 23, 31), labels[1]));
  EXPECT_TRUE(at::equal(segmentation_label_map(logits, 7, 9), logits.argmax(1)));  // no resize at the logits' size
  EXPECT_THROW(segmentation_label_map(logits, 0, 5), Error);
  EXPECT_THROW(segmentation_label_map(at::randn({5, 7}), 3, 3), Error);
}

TEST(Segformer, GoldenMicroRandom) {
  LORQ_REQUIRE_SHARED_FILE(micro_dir() + "/golden.safetensors");
  c10::NoGradGuard ng;
  const TensorMap g = read_golden(micro_dir() + "/golden.safetensors");
  auto m = load_model(micro_dir());
  EXPECT_EQ(m->architecture(), "segformer-custom-16-32-48-64-d1-2-1-1");
  EXPECT_EQ(m->num_labels(), 6);
  EXPECT_EQ(m->label(5), "LABEL_5");
  EXPECT_EQ(m->preprocessing().input_height, 512);
  EXPECT_EQ(m->preprocessor_config_path(), micro_dir() + "/preprocessor_config.json");
  for (const std::string suffix : {"", "_nonsquare"}) {
    const at::Tensor images = g.at("pixel_values" + suffix);
    const StageState features = run_encoder(*m, images);
    ASSERT_EQ(features.size(), 4u);
    for (int s = 0; s < 4; ++s) {
      const at::Tensor& want = g.at("encoder_hidden_state_" + std::to_string(s) + suffix);
      ASSERT_EQ(features[s].sizes(), want.sizes());
      const double d = max_abs(features[s], want);
      std::printf("micro%s encoder_hidden_state_%d max abs diff %.3g\n", suffix.c_str(), s, d);
      EXPECT_LT(d, 2e-5);
    }
    const at::Tensor cls_in = classifier_input(*m, images);
    const double dc = max_abs(cls_in, g.at("decode_head_classifier_input" + suffix));
    const at::Tensor logits = m->finish(features).logits();
    ASSERT_EQ(logits.sizes(), g.at("logits" + suffix).sizes());
    const double dl = max_abs(logits, g.at("logits" + suffix));
    std::printf("micro%s classifier input max abs diff %.3g, logits %.3g (max |logit| %.3g)\n", suffix.c_str(), dc, dl,
                g.at("logits" + suffix).abs().max().item<double>());
    // The classifier input reaches |45| (the BatchNorm's small running variances scale it up): 1e-4 is 2e-6 of it,
    // the float32 noise of the folded product; a BatchNorm-eps mistake moves it by ~1.
    EXPECT_LT(dc, 1e-4);
    EXPECT_LT(dl, 5e-5);
  }
  // post_process_semantic_segmentation at the target size, compared where the top-2 margin is clearly above the
  // logits' tolerance (near-ties may flip with float noise).
  const at::Tensor target = g.at("post_target_size");
  const at::Tensor want = g.at("post_segmentation"), margin = g.at("post_top2_margin");
  const at::Tensor labels = segmentation_label_map(m->forward(g.at("pixel_values")).logits(), target[0].item<int64_t>(),
                                                   target[1].item<int64_t>());
  ASSERT_EQ(labels.sizes(), want.sizes());
  const at::Tensor clear = margin > 1e-3;
  const int64_t compared = clear.sum().item<int64_t>();
  const int64_t differ = (labels.ne(want) & clear).sum().item<int64_t>();
  std::printf("micro post_segmentation: %lld of %lld pixels compared, %lld differ (all pixels: %lld differ)\n",
              (long long)compared, (long long)want.numel(), (long long)differ,
              (long long)labels.ne(want).sum().item<int64_t>());
  EXPECT_GT(compared, want.numel() * 9 / 10);
  EXPECT_EQ(differ, 0);
}
