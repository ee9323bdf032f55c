// Activation quantization (spec §8): quantizers against scalar references, calibration against brute force, the
// mixed-precision rule, LN folding and ridge regression, the model's hook points, and DeiT-Tiny W32A8/W32A4.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <map>
#include <vector>

#include "lorq/quant/activation_quant.h"
#include "lorq/common/error.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/vit.h"
#include "shared_data.h"

using namespace lorq;

namespace {

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<float> values(const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// §4.1 entry by entry, in float32 like the reference: Δ·(clip(round_half_even(x/Δ) + z, 0, 2^b−1) − z).
float ref_uniform(float x, float s, float z, int bits) {
  float c = std::nearbyint(x / s) + z;
  c = std::min(std::max(c, 0.0f), static_cast<float>((1 << bits) - 1));
  return (c - z) * s;
}

// §8.2 in double: p = round(−2·log2(x/Δ)); 0 when p ≥ 2^b (x = 0 included); else Δ·2^(−clamp(p)/2).
double ref_log_sqrt2(double x, double s, int bits) {
  if (x <= 0) return 0;
  double p = std::nearbyint(-2.0 * std::log2(x / s));
  if (p >= (1 << bits)) return 0;
  p = std::max(p, 0.0);
  return s * std::pow(2.0, -p / 2);
}
// How close −2·log2(x/Δ) is to a rounding tie (where float32 and double may round differently).
double tie_distance(double x, double s) {
  const double t = -2.0 * std::log2(x / s);
  return std::abs(t - std::floor(t) - 0.5);
}

// numpy's quantile on a copy, by full sort: the obviously-correct reference.
float ref_quantile(std::vector<float> v, double p) {
  std::sort(v.begin(), v.end());
  const double t = p * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(std::floor(t));
  const double f = t - static_cast<double>(i);
  const double lo = v[i];
  return static_cast<float>(f > 0 ? lo + f * (static_cast<double>(v[i + 1]) - lo) : lo);
}

struct RefParams {
  float scale, zero;
};
RefParams ref_params(float lo, float hi, int bits) {
  const float s = (hi - lo) / static_cast<float>((1 << bits) - 1);
  return {s, std::nearbyint(-lo / s)};
}

double ref_uniform_mse(const std::vector<float>& v, RefParams p, int bits) {
  double e = 0;
  for (float x : v) e += std::pow(static_cast<double>(ref_uniform(x, p.scale, p.zero, bits)) - x, 2);
  return e / static_cast<double>(v.size());
}

// Heavy-tailed activations: a Gaussian bulk with a few large outliers, shifted so the range is asymmetric.
at::Tensor activations(std::vector<int64_t> shape, uint64_t seed) {
  at::manual_seed(seed);
  at::Tensor x = at::randn(shape) + 0.3;
  at::Tensor outliers = (at::rand(shape) < 0.002).to(at::kFloat) * at::randn(shape) * 20;
  return x + outliers;
}

VitConfig small_config(bool qkv_bias = true, const std::string& pool = "token") {
  VitConfig c;
  c.architecture = "test_vit";
  c.embed_dim = 24;
  c.num_heads = 3;
  c.depth = 2;
  c.img_size = 16;
  c.patch_size = 4;
  c.mlp_ratio = 2.0;
  c.num_classes = 7;
  c.qkv_bias = qkv_bias;
  c.global_pool = pool;
  c.fc_norm = pool == "avg";
  c.preprocessing.input_height = c.preprocessing.input_width = 16;
  return c;
}

// A random ViT whose LayerNorms and biases are not the identity/zero of a fresh init (folding must move them).
std::unique_ptr<VisionTransformer> random_vit(const VitConfig& c, uint64_t seed) {
  auto m = VisionTransformer::create_random(c, seed);
  for (const auto& [key, t] : m->named_tensors()) {
    if (key.find("norm") != std::string::npos && key.size() > 7 && key.substr(key.size() - 7) == ".weight")
      m->set_tensor(key, 1 + 0.5 * at::randn(t.sizes()));
    else if (key.size() > 5 && key.substr(key.size() - 5) == ".bias")
      m->set_tensor(key, 0.1 * at::randn(t.sizes()));
    else
      m->set_tensor(key, t * 5);  // larger weights: activations with some structure
  }
  return m;
}

double rel_max_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

}  // namespace

// --- quantizers -----------------------------------------------------------------------------------------------

TEST(ActivationQuantizer, UniformPerTensorAndPerChannelMatchScalarReference) {
  for (int bits : {2, 3, 4, 6, 8}) {
    const at::Tensor x = activations({3, 7, 13}, 10 + bits);
    // Per tensor.
    const at::Tensor s = at::full({1}, 0.37f), z = at::full({1}, static_cast<float>(1 << (bits - 1)));
    const std::vector<float> got = values(fake_quantize_uniform(x, s, z, bits)), xv = values(x);
    for (size_t i = 0; i < xv.size(); ++i)
      ASSERT_EQ(got[i], ref_uniform(xv[i], 0.37f, z.item<float>(), bits)) << "bits " << bits << " at " << i;
    // Per channel (13 channels of the last dim), with a non-integer zero-point as after LN folding.
    const at::Tensor sc = at::rand({13}) + 0.05, zc = at::rand({13}) * (1 << bits);
    const std::vector<float> gc = values(fake_quantize_uniform(x, sc, zc, bits)), sv = values(sc), zv = values(zc);
    for (size_t i = 0; i < xv.size(); ++i)
      ASSERT_EQ(gc[i], ref_uniform(xv[i], sv[i % 13], zv[i % 13], bits)) << "bits " << bits << " at " << i;
  }
}

TEST(ActivationQuantizer, UniformErrorCeilingPerBitWidth) {
  // Inside the clipping range the error is at most Δ/2, and the MSE of uniform data about Δ²/12.
  double previous_mse = 1e30;
  for (int bits : {2, 3, 4, 6, 8}) {
    const at::Tensor x = at::rand({5, 9, 11}) * 6 - 2;  // [−2, 4]
    const float lo = -2, hi = 4, s = (hi - lo) / static_cast<float>((1 << bits) - 1);
    const at::Tensor scale = at::full({1}, s), zero = at::full({1}, std::nearbyint(-lo / s));
    const at::Tensor err = fake_quantize_uniform(x, scale, zero, bits) - x;
    const double max_err = err.abs().max().item<double>(), mse = err.pow(2).mean().item<double>();
    EXPECT_LE(max_err, s / 2 * (1 + 1e-5)) << bits;
    EXPECT_LT(mse, s * s / 12 * 1.3) << bits;
    EXPECT_LT(mse, previous_mse) << bits;
    previous_mse = mse;
  }
}

TEST(ActivationQuantizer, LogSqrt2MatchesDefinition) {
  for (int bits : {2, 3, 4, 6, 8}) {
    // Softmax-like values over many octaves, exact zeros and values above Δ.
    at::manual_seed(bits);
    at::Tensor x = at::exp2(-at::rand({4, 9, 17}) * 24);
    x.view(-1).slice(0, 0, 20).zero_();
    const float delta = 0.6f;
    const std::vector<float> xv = values(x);
    const std::vector<float> got = values(fake_quantize_log_sqrt2(x, at::full({1}, delta), bits));
    int near_ties = 0;
    for (size_t i = 0; i < xv.size(); ++i) {
      const double want = ref_log_sqrt2(xv[i], delta, bits);
      if (xv[i] > 0 && tie_distance(xv[i], delta) < 1e-4) {
        ++near_ties;  // float32 log2 may round the other way here
        continue;
      }
      ASSERT_NEAR(got[i], want, 1e-6 * want) << "bits " << bits << " x " << xv[i];
    }
    EXPECT_LT(near_ties, 10);
  }
  // Edge cases: 0 -> 0, x > Δ -> Δ, every level Δ·2^(−p/2) (odd and even p) maps onto itself, the last level is
  // p = 2^b − 1, and below it everything is 0.
  const int bits = 3;
  const float d = 0.5f;
  std::vector<float> xs = {0.0f, 0.9f, 5.0f, d};
  for (int p = 0; p < 8; ++p) xs.push_back(static_cast<float>(d * std::pow(2.0, -p / 2.0)));
  xs.push_back(static_cast<float>(d * std::pow(2.0, -8 / 2.0)));  // p = 8 = 2^b: zero
  const std::vector<float> got = values(fake_quantize_log_sqrt2(at::tensor(xs), at::full({1}, d), bits));
  EXPECT_EQ(got[0], 0.0f);
  EXPECT_EQ(got[1], d);
  EXPECT_EQ(got[2], d);
  EXPECT_EQ(got[3], d);
  for (int p = 0; p < 8; ++p) EXPECT_NEAR(got[4 + p], xs[4 + p], 1e-7) << "p " << p;
  EXPECT_EQ(got[12], 0.0f);
}

TEST(ActivationQuantizer, RejectsBadParameters) {
  ActivationQuantizer q;
  EXPECT_THROW(q(at::ones({2, 3})), Error);  // not calibrated
  EXPECT_THROW(fake_quantize_uniform(at::ones({2, 3}), at::ones({2}), at::ones({2}), 4), Error);
  EXPECT_THROW(fake_quantize_uniform(at::ones({2, 3}), at::ones({1}), at::ones({1}), 9), Error);
  EXPECT_THROW(calibrate_activation_quantizer(q, at::full({4}, NAN)), Error);
}

// --- calibration ----------------------------------------------------------------------------------------------

TEST(ActivationCalibration, PerTensorPicksTheMinimalMsePercentile) {
  const std::vector<double>& P = activation_percentiles();
  for (int bits : {2, 4, 8}) {
    const at::Tensor x = activations({4, 25, 30}, 100 + bits);
    const std::vector<float> v = values(x);
    std::vector<RefParams> cand;
    std::vector<double> mse;
    for (double p : P) {
      cand.push_back(ref_params(ref_quantile(v, 1 - p), ref_quantile(v, p), bits));
      mse.push_back(ref_uniform_mse(v, cand.back(), bits));
    }
    const size_t best = std::min_element(mse.begin(), mse.end()) - mse.begin();
    ActivationQuantizer q;
    q.bits = bits;
    calibrate_activation_quantizer(q, x);
    ASSERT_EQ(q.scale.numel(), 1);
    // The chosen candidate is one of the three, with an MSE no worse than the brute-force best (float32 sums).
    size_t chosen = P.size();
    for (size_t i = 0; i < P.size(); ++i)
      if (std::abs(q.scale.item<float>() - cand[i].scale) <= 1e-6f * cand[i].scale &&
          q.zero_point.item<float>() == cand[i].zero)
        chosen = i;
    ASSERT_LT(chosen, P.size()) << "bits " << bits << ": not a candidate";
    EXPECT_LE(mse[chosen], mse[best] * (1 + 1e-5)) << "bits " << bits << " chose " << chosen << " best " << best;
    std::printf("bits %d: MSEs %.4g %.4g %.4g, chose p=%g\n", bits, mse[0], mse[1], mse[2], P[chosen]);
  }
}

TEST(ActivationCalibration, PerChannelChoosesPerChannel) {
  const int bits = 4;
  const at::Tensor x = activations({6, 50, 5}, 7);  // 5 channels of 300 entries
  ActivationQuantizer q;
  q.type = ActQuantizerType::PerChannel;
  q.bits = bits;
  calibrate_activation_quantizer(q, x);
  ASSERT_EQ(q.scale.numel(), 5);
  const at::Tensor rows = x.reshape({-1, 5}).t().contiguous();
  for (int64_t c = 0; c < 5; ++c) {
    const std::vector<float> v = values(rows[c]);
    double best = 1e10;
    RefParams want{};
    for (double p : activation_percentiles()) {
      const RefParams r = ref_params(ref_quantile(v, 1 - p), ref_quantile(v, p), bits);
      const double e = ref_uniform_mse(v, r, bits);
      if (e < best) best = e, want = r;
    }
    EXPECT_NEAR(q.scale[c].item<float>(), want.scale, 1e-6 * want.scale) << c;
    EXPECT_EQ(q.zero_point[c].item<float>(), want.zero) << c;
  }
}

TEST(ActivationCalibration, LogSqrt2PicksTheMinimalMseQuantile) {
  at::manual_seed(3);
  const at::Tensor x = at::softmax(at::randn({2, 3, 11, 11}) * 3, -1);
  const std::vector<float> v = values(x);
  for (int bits : {3, 4, 8}) {
    double best = 1e10;
    float want = *std::max_element(v.begin(), v.end());
    for (double p : activation_percentiles()) {
      const float d = ref_quantile(v, p);
      double e = 0;
      for (float xi : v) e += std::pow(ref_log_sqrt2(xi, d, bits) - xi, 2);
      e /= v.size();
      if (e < best) best = e, want = d;
    }
    ActivationQuantizer q;
    q.type = ActQuantizerType::LogSqrt2;
    q.bits = bits;
    calibrate_activation_quantizer(q, x);
    EXPECT_FLOAT_EQ(q.scale.item<float>(), want) << bits;
    EXPECT_FALSE(q.zero_point.defined());
  }
}

TEST(ActivationMixedPrecision, ClosedFormRuleReproducesTheDeiTSmallExample) {
  // §8.4's example: DeiT-S, a = 4, S_max = the fc2 input (197·1536).
  const std::map<std::string, int64_t> sizes = {{"softmax", 6 * 197 * 197},
                                                {"fc2_in", 197 * 1536},
                                                {"norm1_out", 197 * 384},
                                                {"q", 6 * 197 * 64},
                                                {"head_in", 384}};
  const auto bits = activation_mixed_precision(sizes, 4);
  EXPECT_EQ(bits.at("softmax"), 4);
  EXPECT_EQ(bits.at("fc2_in"), 4);
  EXPECT_EQ(bits.at("norm1_out"), 8);
  EXPECT_EQ(bits.at("q"), 8);
  EXPECT_EQ(bits.at("head_in"), 8);
  // A tensor half the size of the largest gets twice the bits, a bit more than half gets the next option down.
  const auto b = activation_mixed_precision({{"big", 1000}, {"half", 500}, {"most", 600}}, 3);
  EXPECT_EQ(b.at("big"), 3);
  EXPECT_EQ(b.at("half"), 6);
  EXPECT_EQ(b.at("most"), 4);
}

// --- the model's hook points ------------------------------------------------------------------------------------

TEST(ActivationHooks, PointsAreListedInNetworkOrderWithKindsAndConsumers) {
  auto m = VisionTransformer::create_random(small_config(), 1);
  const auto& pts = m->activation_points();
  ASSERT_EQ(pts.size(), 2u * 8 + 1);
  EXPECT_EQ(pts[0].name, "blocks.0.norm1.out");
  EXPECT_EQ(pts[0].kind, ActivationKind::LayerNormOutput);
  EXPECT_EQ(pts[0].norm, "blocks.0.norm1");
  EXPECT_EQ(pts[0].consumer, "blocks.0.attn.qkv");
  EXPECT_EQ(m->activation_point("blocks.1.attn.softmax").kind, ActivationKind::Softmax);
  EXPECT_EQ(m->activation_point("blocks.1.mlp.fc2.in").consumer, "blocks.1.mlp.fc2");
  EXPECT_EQ(m->activation_point("blocks.1.attn.proj.in").consumer, "blocks.1.attn.proj");
  EXPECT_EQ(m->activation_point("blocks.1.norm2.out").consumer, "blocks.1.mlp.fc1");
  EXPECT_TRUE(m->activation_point("blocks.0.attn.k").consumer.empty());
  EXPECT_EQ(pts.back().name, "head.in");
  EXPECT_EQ(pts.back().kind, ActivationKind::PerTensor);  // the token pool's select sits between norm and head
  EXPECT_THROW(m->activation_point("blocks.0.nope"), Error);
  EXPECT_THROW(m->set_activation_hook("nope", [](const at::Tensor& x) { return x; }), Error);
  // Average pooling with fc_norm: the head reads a LayerNorm.
  auto avg = VisionTransformer::create_random(small_config(true, "avg"), 1);
  EXPECT_EQ(avg->activation_point("head.in").kind, ActivationKind::LayerNormOutput);
  EXPECT_EQ(avg->activation_point("head.in").norm, "fc_norm");
}

TEST(ActivationHooks, EveryPointIsVisitedOnceWithTheExpectedShape) {
  const VitConfig c = small_config();
  auto m = VisionTransformer::create_random(c, 2);
  std::map<std::string, std::vector<int64_t>> seen;
  for (const auto& p : m->activation_points()) {
    const std::string name = p.name;
    m->set_activation_hook(name, [&seen, name](const at::Tensor& x) {
      EXPECT_EQ(seen.count(name), 0u) << name;
      seen[name] = x.sizes().vec();
      return x;
    });
  }
  const at::NoGradGuard no_grad;
  m->forward(at::randn({2, 3, 16, 16})).logits();
  const int64_t N = 17, D = 24, H = 3;
  EXPECT_EQ(seen.size(), m->activation_points().size());
  EXPECT_EQ(seen["blocks.0.norm1.out"], (std::vector<int64_t>{2, N, D}));
  EXPECT_EQ(seen["blocks.0.attn.q"], (std::vector<int64_t>{2, H, N, D / H}));
  EXPECT_EQ(seen["blocks.0.attn.softmax"], (std::vector<int64_t>{2, H, N, N}));
  EXPECT_EQ(seen["blocks.1.mlp.fc2.in"], (std::vector<int64_t>{2, N, 2 * D}));
  EXPECT_EQ(seen["head.in"], (std::vector<int64_t>{2, D}));
}

TEST(ActivationHooks, IdentityHooksAndClearedHooksAreBitIdentical) {
  auto m = random_vit(small_config(), 3);
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({3, 3, 16, 16});
  const at::Tensor before = m->forward(images).logits();
  for (const auto& p : m->activation_points()) m->set_activation_hook(p.name, [](const at::Tensor& x) { return x; });
  EXPECT_TRUE(at::equal(m->forward(images).logits(), before));
  // A hook changes the output; clearing it restores the float path exactly.
  m->set_activation_hook("blocks.1.attn.softmax", [](const at::Tensor& x) { return x * 0.5; });
  EXPECT_FALSE(at::equal(m->forward(images).logits(), before));
  m->clear_activation_hooks();
  EXPECT_FALSE(m->has_activation_hooks());
  EXPECT_TRUE(at::equal(m->forward(images).logits(), before));
}

TEST(ActivationHooks, SetBiasCreatesAMissingBias) {
  auto m = VisionTransformer::create_random(small_config(/*qkv_bias=*/false), 4);
  EXPECT_FALSE(m->layer("blocks.0.attn.qkv").has_bias);
  EXPECT_FALSE(m->bias("blocks.0.attn.qkv").defined());
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({2, 3, 16, 16});
  const at::Tensor before = m->forward(images).logits();
  m->set_bias("blocks.0.attn.qkv", at::zeros({72}));
  EXPECT_TRUE(m->layer("blocks.0.attn.qkv").has_bias);
  EXPECT_TRUE(m->tensor("blocks.0.attn.qkv.bias").defined());
  EXPECT_TRUE(at::allclose(m->forward(images).logits(), before, 1e-5, 1e-6));
  m->set_bias("blocks.0.attn.qkv", at::full({72}, 0.5f));
  EXPECT_FALSE(at::allclose(m->forward(images).logits(), before, 1e-5, 1e-6));
  EXPECT_THROW(m->set_bias("blocks.0.attn.qkv", at::zeros({5})), Error);
  // Once every qkv layer has one, the config says so; a checkpoint with qkv biases loads them whatever it says.
  EXPECT_FALSE(m->config().qkv_bias);
  m->set_bias("blocks.1.attn.qkv", at::full({72}, 0.25f));
  EXPECT_TRUE(m->config().qkv_bias);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [key, t] : m->named_tensors()) tensors[key] = t;
  VitConfig no_bias = m->config();
  no_bias.qkv_bias = false;
  VisionTransformer reloaded(no_bias, tensors, "<test>");
  EXPECT_TRUE(reloaded.layer("blocks.0.attn.qkv").has_bias);
  EXPECT_TRUE(at::equal(reloaded.forward(images).logits(), m->forward(images).logits()));
  EXPECT_THROW(m->set_tensor("blocks.0.norm1.weight", at::zeros({5})), Error);
}

// --- LN folding and ridge regression ------------------------------------------------------------------------------

TEST(LayerNormFolding, PreservesTheFunctionOfARandomViT) {
  for (const auto& cfg : {small_config(/*qkv_bias=*/false), small_config(true, "avg")}) {
    auto m = random_vit(cfg, 5);
    const at::NoGradGuard no_grad;
    const at::Tensor images = at::randn({8, 3, 16, 16});
    const at::Tensor before = m->forward(images).logits();
    ActQuantSettings s;
    s.bits = 4;
    s.ridge_regression = false;
    const ActivationQuantization aq = quantize_activations(*m, images, s);
    const size_t norms = 2 * cfg.depth + (cfg.fc_norm ? 1 : 0);
    EXPECT_EQ(aq.folded_norms.size(), norms);
    for (const auto& [point, q] : aq.quantizers) EXPECT_NE(q.type, ActQuantizerType::PerChannel) << point;
    EXPECT_TRUE(m->layer("blocks.1.attn.qkv").has_bias);
    disable_activation_quantization(*m);
    const double err = rel_max_err(m->forward(images).logits(), before);
    std::printf("LN folding (%s pool): relative max change %.3g\n", cfg.global_pool.c_str(), err);
    EXPECT_LT(err, 1e-4);
    // With quantization on the output moves, but stays correlated with the float one.
    enable_activation_quantization(*m, aq);
    const at::Tensor quantized = m->forward(images).logits();
    EXPECT_FALSE(at::equal(quantized, before));
    EXPECT_LT(rel_max_err(quantized, before), 1.0);
  }
}

TEST(LayerNormFolding, FoldedQuantizerIsTheMeanScaleAndZeroPoint) {
  auto m = random_vit(small_config(), 6);
  const ActivationPoint& p = m->activation_point("blocks.0.norm2.out");
  ActivationQuantizer pc;
  pc.type = ActQuantizerType::PerChannel;
  pc.bits = 4;
  pc.scale = at::rand({24}) + 0.1;
  pc.zero_point = at::randint(0, 16, {24}).to(at::kFloat);
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({2, 3, 16, 16});
  const at::Tensor before = m->forward(images).logits();
  const ActivationQuantizer pt = fold_layernorm_quantizer(*m, p, pc);
  EXPECT_EQ(pt.type, ActQuantizerType::PerTensor);
  EXPECT_NEAR(pt.scale.item<float>(), pc.scale.mean().item<float>(), 1e-6);
  EXPECT_NEAR(pt.zero_point.item<float>(), pc.zero_point.mean().item<float>(), 1e-5);
  EXPECT_LT(rel_max_err(m->forward(images).logits(), before), 1e-5);
  EXPECT_THROW(fold_layernorm_quantizer(*m, m->activation_point("blocks.0.attn.q"), pc), Error);
}

TEST(RidgeRegression, ReducesTheOutputErrorAndMatchesAFloat64Solve) {
  at::manual_seed(8);
  const int64_t N = 300, n = 17, m = 5;
  // A 3-bit quantizer clipping at ±1 on Gaussian inputs: its error is partly systematic, which a weight change
  // can undo.
  const at::Tensor x_fp = at::randn({N, n}) + 0.2;
  const at::Tensor x_q = fake_quantize_uniform(x_fp, at::full({1}, 2.0f / 7), at::full({1}, 4.0f), 3);
  const at::Tensor w = at::randn({m, n}), b = at::randn({m});
  const at::Tensor y_fp = at::addmm(b, x_fp, w.t());
  for (bool with_bias : {true, false}) {
    for (double lambda : {0.1, 10.0}) {
      const at::Tensor bb = with_bias ? b : at::Tensor();
      const CorrectedLinear c = ridge_regression_correction(x_fp, x_q, w, bb, lambda);
      const at::Tensor before = with_bias ? at::addmm(b, x_q, w.t()) : at::mm(x_q, w.t());
      const at::Tensor after = with_bias ? at::addmm(c.bias, x_q, c.weight.t()) : at::mm(x_q, c.weight.t());
      const at::Tensor y = with_bias ? y_fp : at::mm(x_fp, w.t());
      const double e0 = (y - before).norm().item<double>(), e1 = (y - after).norm().item<double>();
      // The ridge objective is the squared residual plus λ‖β‖², so a small λ cannot do worse than β = 0.
      EXPECT_LT(e1, 0.85 * e0) << "bias " << with_bias << " lambda " << lambda;
      std::printf("ridge (bias %d, lambda %g): residual %.2f -> %.2f\n", with_bias, lambda, e0, e1);
      // Reference: the explicit float64 normal equations.
      const at::Tensor ones = at::ones({N, 1}, at::kDouble);
      at::Tensor X = x_q.to(at::kDouble), Wt = w.to(at::kDouble);
      if (with_bias) X = at::cat({X, ones}, 1), Wt = at::cat({Wt, b.to(at::kDouble).unsqueeze(1)}, 1);
      const at::Tensor Y = y.to(at::kDouble);
      const at::Tensor A = at::mm(X.t(), X) + lambda * at::eye(X.size(1), at::kDouble);
      const at::Tensor beta = at::mm(at::inverse(A), at::mm(X.t(), Y - at::mm(X, Wt.t())));
      const at::Tensor want = Wt + beta.t();
      EXPECT_LT((c.weight.to(at::kDouble) - want.narrow(1, 0, n)).abs().max().item<double>(), 1e-5);
      if (with_bias) EXPECT_LT((c.bias.to(at::kDouble) - want.select(1, n)).abs().max().item<double>(), 1e-5);
    }
  }
  // λ → ∞ leaves W alone; an unquantized input has nothing to correct.
  const CorrectedLinear big = ridge_regression_correction(x_fp, x_q, w, b, 1e14);
  EXPECT_LT((big.weight - w).abs().max().item<double>(), 1e-6);
  const CorrectedLinear none = ridge_regression_correction(x_fp, x_fp, w, b, 1e-3);
  EXPECT_LT((none.weight - w).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(ridge_regression_correction(x_fp, x_q, w, b, 0), Error);
  EXPECT_THROW(ridge_regression_correction(x_fp, x_q.narrow(0, 0, 5), w, b, 1), Error);
}

TEST(RidgeRegression, LargeLayersUseFloat32ProductsCloseToTheFloat64Solve) {
  // 5000 x 400 inputs, 200 outputs: above the float64-product threshold, like the MLP layers of real models.
  at::manual_seed(12);
  const int64_t N = 5000, n = 400, m = 200;
  const at::Tensor x_fp = at::randn({N, n}) * 2;
  const at::Tensor x_q = fake_quantize_uniform(x_fp, at::full({1}, 0.5f), at::full({1}, 8.0f), 4);
  const at::Tensor w = at::randn({m, n}) * 0.05, b = at::randn({m});
  const double lambda = 2000;
  const CorrectedLinear c = ridge_regression_correction(x_fp, x_q, w, b, lambda);
  const at::Tensor X = at::cat({x_q.to(at::kDouble), at::ones({N, 1}, at::kDouble)}, 1);
  const at::Tensor R = at::mm(x_fp.to(at::kDouble) - x_q.to(at::kDouble), w.to(at::kDouble).t());
  const at::Tensor A = at::mm(X.t(), X) + lambda * at::eye(n + 1, at::kDouble);
  const at::Tensor beta = at::linalg_solve(A, at::mm(X.t(), R));
  const at::Tensor got_beta = (c.weight.to(at::kDouble) - w.to(at::kDouble)).t();
  const double rel = (got_beta - beta.narrow(0, 0, n)).abs().max().item<double>() / beta.abs().max().item<double>();
  std::printf("float32-product ridge: max deviation %.3g of max |beta|\n", rel);
  EXPECT_LT(rel, 1e-3);
}

TEST(ActivationPipeline, RidgeRegressionLowersTheQuantizedOutputErrorOfARandomViT) {
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({16, 3, 16, 16});
  double err[2];
  for (bool ridge : {false, true}) {
    auto m = random_vit(small_config(), 9);
    const at::Tensor ref = m->forward(images).logits();
    ActQuantSettings s;
    s.bits = 4;
    s.ridge_regression = ridge;
    const ActivationQuantization aq = quantize_activations(*m, images, s);
    EXPECT_EQ(aq.corrected_layers.size(), ridge ? 2u * 4 + 1 : 0u);
    if (ridge) EXPECT_EQ(aq.corrected_layers.front(), "blocks.0.attn.qkv");
    if (ridge) EXPECT_EQ(aq.corrected_layers.back(), "head");
    EXPECT_TRUE(m->has_activation_hooks());
    err[ridge] = (m->forward(images).logits() - ref).norm().item<double>() / ref.norm().item<double>();
    // Staged execution runs the same quantizers.
    EXPECT_TRUE(at::equal(m->run_from(0, m->embed(images)).logits(), m->forward(images).logits()));
  }
  std::printf("random ViT A4: relative logit error %.4f without, %.4f with ridge regression\n", err[0], err[1]);
  EXPECT_LT(err[1], err[0]);
}

TEST(ActivationPipeline, CalibrationIsSequential) {
  // Each quantizer is fitted on its input as the upstream quantizers left it (§8.3): recording that input with
  // the installed quantizers and refitting gives the same parameters; fitting on the float input does not.
  auto m = random_vit(small_config(), 13);
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({8, 3, 16, 16});
  const std::string point = "blocks.1.mlp.fc2.in";
  at::Tensor float_input;
  m->set_activation_hook(point, [&](const at::Tensor& x) { return float_input = x; });
  m->forward(images).logits();
  ActQuantSettings s;
  s.bits = 3;
  s.fold_layernorm = false;
  s.ridge_regression = false;
  const ActivationQuantization aq = quantize_activations(*m, images, s);
  const ActivationQuantizer& installed = aq.quantizers.at(point);
  at::Tensor quantized_input;
  m->set_activation_hook(point, [&](const at::Tensor& x) { return installed(quantized_input = x); });
  m->forward(images).logits();
  ActivationQuantizer refit, from_float;
  refit.bits = from_float.bits = 3;
  calibrate_activation_quantizer(refit, quantized_input);
  calibrate_activation_quantizer(from_float, float_input);
  EXPECT_TRUE(at::equal(refit.scale, installed.scale));
  EXPECT_TRUE(at::equal(refit.zero_point, installed.zero_point));
  EXPECT_FALSE(at::equal(from_float.scale, installed.scale));
  // Per-channel LN outputs stay per-channel when folding is off.
  EXPECT_EQ(aq.quantizers.at("blocks.0.norm1.out").type, ActQuantizerType::PerChannel);
  EXPECT_EQ(aq.quantizers.at("blocks.0.norm1.out").scale.numel(), 24);
}

TEST(ActivationPipeline, EightBitSkipsFoldingAndTheLayersAfterEightBitNorms) {
  auto m = random_vit(small_config(), 10);
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({8, 3, 16, 16});
  ActQuantSettings s;  // 8 bits
  const ActivationQuantization aq = quantize_activations(*m, images, s);
  EXPECT_TRUE(aq.folded_norms.empty());
  EXPECT_EQ(aq.quantizers.at("blocks.0.norm1.out").type, ActQuantizerType::PerTensor);
  EXPECT_EQ(aq.quantizers.at("blocks.0.attn.softmax").type, ActQuantizerType::LogSqrt2);
  const std::vector<std::string> want = {"blocks.0.attn.proj", "blocks.0.mlp.fc2", "blocks.1.attn.proj",
                                         "blocks.1.mlp.fc2", "head"};
  EXPECT_EQ(aq.corrected_layers, want);
}

TEST(ActivationPipeline, MixedPrecisionAndCancellation) {
  auto m = random_vit(small_config(), 11);
  const at::NoGradGuard no_grad;
  const at::Tensor images = at::randn({4, 3, 16, 16});
  ActQuantSettings s;
  s.bits = 4;
  s.mixed_precision = true;
  const ActivationQuantization aq = quantize_activations(*m, images, s);
  // Per-sample sizes: softmax 3·17·17 = 867 (the largest), fc2 input 17·48 = 816, LN outputs and q 408, head 24.
  EXPECT_EQ(aq.quantizers.at("blocks.0.attn.softmax").bits, 4);
  EXPECT_EQ(aq.quantizers.at("blocks.0.mlp.fc2.in").bits, 4);
  EXPECT_EQ(aq.quantizers.at("blocks.0.norm1.out").bits, 8);  // 408 entries: 8 bits, per tensor, not folded
  EXPECT_TRUE(aq.folded_norms.empty());
  EXPECT_EQ(aq.quantizers.at("head.in").bits, 8);

  std::atomic<bool> cancel{true};
  JobControl job;
  job.cancel = &cancel;
  auto m2 = random_vit(small_config(), 11);
  EXPECT_THROW(quantize_activations(*m2, images, s, job), Cancelled);
  EXPECT_FALSE(m2->has_activation_hooks());
}

// --- DeiT-Tiny ------------------------------------------------------------------------------------------------

TEST(ActivationDeiT, LayerNormFoldingPreservesDeiTTiny) {
  const std::string dir = testdata::shared_path("models/deit_tiny_patch16_224");
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  init_threads();
  auto m = load_model(dir);
  SafetensorsFile golden = SafetensorsFile::open(dir + "/golden.safetensors");
  const at::Tensor input = read_tensor(golden, golden.at("input")).to(at::kFloat);
  const at::NoGradGuard no_grad;
  const at::Tensor before = m->forward(input).logits();
  ActQuantSettings s;
  s.bits = 4;
  s.ridge_regression = false;
  const ActivationQuantization aq = quantize_activations(*m, input, s);
  EXPECT_EQ(aq.folded_norms.size(), 24u);
  disable_activation_quantization(*m);
  const double err = rel_max_err(m->forward(input).logits(), before);
  std::printf("DeiT-Tiny LN folding: relative max logit change %.3g\n", err);
  EXPECT_LT(err, 1e-4);
}

// Top-1 of the model on decoded images, batch by batch.
double top1_pct(Model& model, const ImageBatch& data, int batch) {
  const at::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < data.images.size(0); i += batch) {
    const at::Tensor pred =
        model.forward(data.images.narrow(0, i, std::min<int64_t>(batch, data.images.size(0) - i))).logits().argmax(1);
    for (int64_t j = 0; j < pred.size(0); ++j) correct += pred[j].item<int64_t>() == data.labels[i + j];
  }
  return 100.0 * correct / data.images.size(0);
}

TEST(ActivationDeiT, TopOneAtA8AndA4OnAHundredImages) {
  const std::string dir = testdata::shared_path("models/deit_tiny_patch16_224");
  const std::string data = testdata::shared_path("datasets/imagenet-sample-500");
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  LORQ_REQUIRE_SHARED_FILE(data + "/labels.csv");
  init_threads();
  const ImageSet set = open_image_set(data + "/images");
  auto model = load_model(dir);
  // Evaluation: images 0..99 (decoded once); calibration: 32 other images from the end of the set.
  double t = now_s();
  const ImageBatch eval = load_batch(set, 0, 100, model->preprocessing(), 2);
  const ImageBatch calib = load_batch(set, 400, 432, model->preprocessing(), 2);
  ASSERT_EQ(eval.images.size(0), 100);
  ASSERT_EQ(calib.images.size(0), 32);
  std::printf("decoded 132 images in %.1f s\n", now_s() - t);

  t = now_s();
  const double float_top1 = top1_pct(*model, eval, 50);
  std::printf("DeiT-Tiny float: top-1 %.1f%% on 100 images (%.1f s)\n", float_top1, now_s() - t);

  double top1[2];
  const int bits[2] = {8, 4};
  for (int i = 0; i < 2; ++i) {
    if (i > 0) model = load_model(dir);
    ActQuantSettings s;
    s.bits = bits[i];
    t = now_s();
    const ActivationQuantization aq = quantize_activations(*model, calib.images, s);
    const double quant_s = now_s() - t;
    t = now_s();
    top1[i] = top1_pct(*model, eval, 50);
    std::printf("DeiT-Tiny W32A%d: top-1 %.1f%% (quantize %.1f s: %zu LNs folded, %zu layers corrected; eval %.1f s)\n",
                bits[i], top1[i], quant_s, aq.folded_norms.size(), aq.corrected_layers.size(), now_s() - t);
    if (i == 0) {  // switched off, the folded and corrected model is (nearly) the float one
      disable_activation_quantization(*model);
      std::printf("DeiT-Tiny A8-prepared weights, quantization off: top-1 %.1f%%\n", top1_pct(*model, eval, 50));
    }
  }
  EXPECT_GE(top1[0], float_top1 - 1.5);
  EXPECT_LT(top1[1], float_top1 + 1.0);
  EXPECT_GT(top1[1], 20.0);  // far above chance (0.1%)
}
