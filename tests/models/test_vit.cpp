#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lorq/common/error.h"
#include "lorq/models/model.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/vit.h"
#include "shared_data.h"

using namespace lorq;

// The ViT's own configuration (the Model interface exposes only what every architecture has).
inline const lorq::VitConfig& vit_config(const lorq::Model& m) {
  return dynamic_cast<const lorq::VisionTransformer&>(m).config();
}

namespace {

VitConfig small_config(int dim, int heads, int depth, int img, int patch, double mlp_ratio, int classes,
                         const std::string& pool = "token") {
  VitConfig c;
  c.architecture = "test_vit";
  c.embed_dim = dim;
  c.num_heads = heads;
  c.depth = depth;
  c.img_size = img;
  c.patch_size = patch;
  c.mlp_ratio = mlp_ratio;
  c.num_classes = classes;
  c.global_pool = pool;
  c.fc_norm = pool == "avg";
  c.preprocessing.input_height = c.preprocessing.input_width = img;
  return c;
}

// A slow, obviously correct forward pass written independently of vit.cpp: conv2d patch embedding, per-head
// attention loops, LayerNorm and GELU from their formulas.
at::Tensor reference_forward(Model& m, const at::Tensor& images) {
  const VitConfig& c = vit_config(m);
  auto T = [&](const std::string& k) { return m.tensor(k).to(at::kDouble); };
  auto ln = [&](const at::Tensor& x, const std::string& k) {
    at::Tensor mu = x.mean(-1, true), var = (x - mu).pow(2).mean(-1, true);
    return (x - mu) / at::sqrt(var + c.norm_eps) * T(k + ".weight") + T(k + ".bias");
  };
  auto lin = [&](const at::Tensor& x, const std::string& k) { return at::matmul(x, T(k + ".weight").t()) + T(k + ".bias"); };
  auto gelu = [](const at::Tensor& x) { return 0.5 * x * (1 + at::erf(x / std::sqrt(2.0))); };
  at::Tensor x = at::conv2d(images.to(at::kDouble), T("patch_embed.proj.weight"), T("patch_embed.proj.bias"),
                            c.patch_size);
  x = x.flatten(2).transpose(1, 2);
  const int64_t B = x.size(0);
  if (c.class_token) x = at::cat({T("cls_token").expand({B, 1, -1}), x}, 1);
  x = x + T("pos_embed");
  const int64_t N = x.size(1), D = c.embed_dim, H = c.num_heads, hd = D / H;
  for (int i = 0; i < c.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    at::Tensor h = ln(x, p + "norm1");
    at::Tensor qkv = lin(h, p + "attn.qkv");
    at::Tensor out = at::zeros({B, N, D}, at::kDouble);
    for (int64_t head = 0; head < H; ++head) {
      at::Tensor q = qkv.slice(2, head * hd, (head + 1) * hd);
      at::Tensor k = qkv.slice(2, D + head * hd, D + (head + 1) * hd);
      at::Tensor v = qkv.slice(2, 2 * D + head * hd, 2 * D + (head + 1) * hd);
      at::Tensor s = at::matmul(q, k.transpose(1, 2)) / std::sqrt(double(hd));
      s = at::exp(s - std::get<0>(s.max(-1, true)));
      s = s / s.sum(-1, true);
      out.slice(2, head * hd, (head + 1) * hd).copy_(at::matmul(s, v));
    }
    x = x + lin(out, p + "attn.proj");
    x = x + lin(gelu(lin(ln(x, p + "norm2"), p + "mlp.fc1")), p + "mlp.fc2");
  }
  at::Tensor pooled;
  if (c.global_pool == "avg") {
    pooled = ln(x.slice(1, c.class_token ? 1 : 0).mean(1), "fc_norm");
  } else {
    pooled = ln(x, "norm").select(1, 0);
  }
  return lin(pooled, "head");
}

double rel_max_err(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() /
         b.to(at::kDouble).abs().max().item<double>();
}

}  // namespace

TEST(VisionTransformer, MatchesSlowReferenceOnOddShapes) {
  c10::NoGradGuard ng;
  struct Case {
    int dim, heads, depth, img, patch;
    double mlp;
    int classes;
    const char* pool;
  };
  for (const Case& k : {Case{36, 3, 2, 20, 4, 2.5, 7, "token"}, Case{64, 1, 1, 24, 8, 4.0, 3, "avg"},
                        Case{30, 5, 3, 15, 5, 3.0, 11, "token"}}) {
    auto m = VisionTransformer::create_random(small_config(k.dim, k.heads, k.depth, k.img, k.patch, k.mlp, k.classes,
                                                           k.pool),
                                              k.dim + k.depth);
    // Random init has tiny weights; spread them so the test exercises softmax and GELU non-linearity.
    for (const auto& l : m->linear_layers()) m->set_weight(l.name, m->weight(l.name) * 20);
    at::Tensor x = at::randn({3, 3, k.img, k.img});
    at::Tensor got = m->forward(x).logits(), want = reference_forward(*m, x);
    ASSERT_EQ(got.sizes(), want.sizes());
    EXPECT_LT(rel_max_err(got, want), 1e-4) << "dim " << k.dim;
  }
}

TEST(VisionTransformer, StagedExecutionEqualsForward) {
  c10::NoGradGuard ng;
  auto m = VisionTransformer::create_random(small_config(48, 3, 4, 32, 8, 4.0, 5), 3);
  at::Tensor x = at::randn({2, 3, 32, 32});
  at::Tensor full = m->forward(x).logits();
  std::vector<StageState> inputs{m->embed(x)};
  for (int s = 0; s < m->num_stages(); ++s) inputs.push_back(m->run_stage(s, inputs.back()));
  for (int s = 0; s < m->num_stages(); ++s)
    EXPECT_TRUE(at::allclose(m->run_from(s, inputs[s]).logits(), full, 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(m->finish(inputs.back()).logits(), full));
}

TEST(VisionTransformer, LayerListAndWeights) {
  auto m = VisionTransformer::create_random(small_config(48, 3, 2, 32, 8, 4.0, 5), 3);
  const auto& layers = m->linear_layers();
  ASSERT_EQ(layers.size(), 1u + 4 * 2 + 1);
  EXPECT_EQ(layers[0].name, "patch_embed.proj");
  EXPECT_FALSE(layers[0].low_rank_allowed);
  EXPECT_EQ(layers[0].in_features, 3 * 8 * 8);
  EXPECT_EQ(layers[1].name, "blocks.0.attn.qkv");
  EXPECT_EQ(layers[1].out_features, 144);
  EXPECT_EQ(layers.back().name, "head");
  EXPECT_EQ(m->weight("patch_embed.proj").sizes(), (std::vector<int64_t>{48, 192}));
  EXPECT_THROW(m->set_weight("blocks.0.attn.qkv", at::zeros({10, 10})), Error);
  EXPECT_THROW(m->weight("blocks.9.attn.qkv"), Error);
  m->set_weight("blocks.0.mlp.fc1", at::ones({192, 48}));
  EXPECT_EQ(m->tensor("blocks.0.mlp.fc1.weight").sum().item<float>(), 192 * 48);
}

TEST(VisionTransformer, OverridesAndObservers) {
  c10::NoGradGuard ng;
  auto m = VisionTransformer::create_random(small_config(48, 3, 2, 32, 8, 4.0, 5), 4);
  at::Tensor x = at::randn({2, 3, 32, 32});
  at::Tensor base = m->forward(x).logits();
  // An override computing the same thing through a low-rank factorisation of full rank leaves the output alone.
  const at::Tensor w = m->weight("blocks.1.mlp.fc1");
  auto svd = at::linalg_svd(w, false);
  at::Tensor A = std::get<0>(svd) * std::get<1>(svd), B = std::get<2>(svd);
  m->set_linear_override("blocks.1.mlp.fc1", [&](const at::Tensor& in, const at::Tensor&, const at::Tensor& b) {
    return at::linear(at::linear(in, B), A, b);
  });
  EXPECT_LT(rel_max_err(m->forward(x).logits(), base), 1e-4);
  m->set_linear_override("blocks.1.mlp.fc1",
                         [](const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) { return at::linear(in, w * 0, b); });
  EXPECT_GT(rel_max_err(m->forward(x).logits(), base), 1e-3);
  m->clear_linear_overrides();
  EXPECT_TRUE(at::equal(m->forward(x).logits(), base));

  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<int64_t>>> seen;
  m->set_observer({"patch_embed.proj", "blocks.0.attn.proj", "head"},
                  [&](const std::string& name, const at::Tensor& in, const at::Tensor& out) {
                    seen[name] = {in.sizes().vec(), out.sizes().vec()};
                  });
  m->forward(x).logits();
  m->clear_observer();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen["patch_embed.proj"].first, (std::vector<int64_t>{2, 16, 192}));
  EXPECT_EQ(seen["blocks.0.attn.proj"].second, (std::vector<int64_t>{2, 17, 48}));
  EXPECT_EQ(seen["head"].second, (std::vector<int64_t>{2, 5}));
  EXPECT_THROW(m->set_observer({"nope"}, nullptr), Error);
}

TEST(VisionTransformer, SaveAndLoadRoundTrip) {
  c10::NoGradGuard ng;
  auto m = VisionTransformer::create_random(small_config(48, 3, 2, 32, 8, 4.0, 5), 5);
  const std::string dir = ::testing::TempDir() + "/vit_roundtrip";
  std::filesystem::create_directories(dir);
  write_tensors(dir + "/model.safetensors", m->named_tensors());
  {
    auto inferred = load_model(dir);  // no config.json: everything inferred from shapes, heads = dim / 64
    EXPECT_EQ(vit_config(*inferred).embed_dim, 48);
    EXPECT_EQ(vit_config(*inferred).num_heads, 1);
    EXPECT_EQ(vit_config(*inferred).num_classes, 5);
  }
  std::ofstream(dir + "/config.json") << vit_config_to_json(vit_config(*m));
  auto loaded = load_model(dir);
  EXPECT_EQ(vit_config(*loaded).num_heads, 3);
  EXPECT_EQ(vit_config(*loaded).depth, 2);
  at::Tensor x = at::randn({2, 3, 32, 32});
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), m->forward(x).logits()));

  // A missing tensor is reported with the file name and the key.
  auto tensors = m->named_tensors();
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(),
                               [](const auto& kv) { return kv.first == "blocks.1.norm2.bias"; }),
                tensors.end());
  write_tensors(dir + "/model.safetensors", tensors);
  try {
    load_model(dir);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.1.norm2.bias"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_model(dir + "/missing"), Error);
  std::filesystem::remove_all(dir);
}

TEST(VisionTransformer, GoldenDeiTTinyLogits) {
  const std::string dir = testdata::shared_path("models/deit_tiny_patch16_224");
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  c10::NoGradGuard ng;
  auto model = load_model(dir);
  EXPECT_EQ(model->linear_layers().size(), 50u);
  SafetensorsFile golden = SafetensorsFile::open(dir + "/golden.safetensors");
  at::Tensor input = read_tensor(golden, golden.at("input")).to(at::kFloat);
  at::Tensor want = read_tensor(golden, golden.at("logits")).to(at::kFloat);
  at::Tensor got = model->forward(input).logits();
  const double err = rel_max_err(got, want);
  std::printf("golden: relative max error %.3g\n", err);
  EXPECT_LT(err, 1e-3);
  EXPECT_TRUE(at::equal(got.argmax(1), want.argmax(1)));
}
