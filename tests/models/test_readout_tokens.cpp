// Model::readout_tokens: the token positions the task's output is read from, checked against the model itself. The
// last block's output reaches the outputs only through those positions, so the gradient of the outputs with respect
// to that layer's output is non-zero exactly there.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <set>

#include "lorq/models/registry.h"
#include "lorq/models/vit.h"
#include "shared_data.h"

using namespace lorq;

namespace {

VitConfig small_vit(const std::string& pool) {
  VitConfig c;
  c.architecture = "test_vit";
  c.embed_dim = 24;
  c.num_heads = 3;
  c.depth = 2;
  c.img_size = 24;
  c.patch_size = 8;
  c.mlp_ratio = 2.0;
  c.num_classes = 7;
  c.global_pool = pool;
  c.fc_norm = pool == "avg";
  c.preprocessing.input_height = c.preprocessing.input_width = 24;
  return c;
}

struct Reached {
  int64_t length = 0;
  std::set<int64_t> positions;  // where the outputs' gradient with respect to the layer's output is non-zero
};

// Adds a zero tensor to `layer`'s output and reads its gradient back from a random projection of every output.
Reached positions_reaching_the_outputs(Model& m, const std::string& layer, const at::Tensor& images) {
  c10::AutoGradMode grad_on(true);
  at::Tensor delta;
  m.set_linear_override(layer, [&delta](const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
    const at::Tensor y = at::linear(x, w, b);
    delta = at::zeros_like(y).requires_grad_(true);
    return y + delta;
  });
  const ModelOutputs out = m.forward(images);
  m.clear_linear_override(layer);
  at::Generator g = at::detail::createCPUGenerator(11);
  at::Tensor loss = at::zeros({});
  for (const at::Tensor& t : out.tensors) loss = loss + (t * at::randn(t.sizes(), g, at::kFloat)).sum();
  loss.backward();
  Reached r;
  r.length = delta.size(1);
  const at::Tensor per_token = delta.grad().abs().sum(at::IntArrayRef{0, 2});
  for (int64_t t = 0; t < per_token.size(0); ++t)
    if (per_token[t].item<double>() > 0) r.positions.insert(t);
  return r;
}

std::set<int64_t> as_set(const std::vector<int64_t>& v) { return {v.begin(), v.end()}; }

}  // namespace

TEST(ReadoutTokens, ClassTokenOfAViTIsWhatItsLastBlockReaches) {
  auto m = VisionTransformer::create_random(small_vit("token"), 5);
  at::Generator g = at::detail::createCPUGenerator(3);
  const at::Tensor images = at::randn({2, 3, 24, 24}, g, at::kFloat);
  const Reached r = positions_reaching_the_outputs(*m, "blocks.1.mlp.fc2", images);
  EXPECT_EQ(r.length, 10);  // the class token and 3x3 patches
  EXPECT_EQ(as_set(m->readout_tokens("blocks.1.mlp.fc2", r.length)), r.positions);
  EXPECT_EQ(r.positions, std::set<int64_t>{0});
  // Every block's layers see the same sequence; the patch embedding and the head do not.
  EXPECT_EQ(m->readout_tokens("blocks.0.attn.qkv", r.length), std::vector<int64_t>{0});
  EXPECT_TRUE(m->readout_tokens("patch_embed.proj", 9).empty());
  EXPECT_TRUE(m->readout_tokens("head", 1).empty());
}

TEST(ReadoutTokens, AveragePoolingReadsEveryToken) {
  auto m = VisionTransformer::create_random(small_vit("avg"), 5);
  at::Generator g = at::detail::createCPUGenerator(4);
  const Reached r = positions_reaching_the_outputs(*m, "blocks.1.mlp.fc2", at::randn({2, 3, 24, 24}, g, at::kFloat));
  EXPECT_EQ(r.positions.size(), 9u);  // every patch token (the class token is left out of the average)
  EXPECT_TRUE(m->readout_tokens("blocks.1.mlp.fc2", r.length).empty());
}

TEST(ReadoutTokens, DetectionTokensOfYolosAtTwoInputSizes) {
  const std::string dir = testdata::shared_path("models/yolos_micro_random");
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  std::unique_ptr<Model> m = load_model(dir);
  const auto& layers = m->linear_layers();
  std::string last;  // the encoder's last layer: the last one whose name is an encoder layer's
  for (const auto& l : layers)
    if (l.name.rfind("vit.encoder.layer.", 0) == 0) last = l.name;
  ASSERT_FALSE(last.empty());
  at::Generator g = at::detail::createCPUGenerator(6);
  for (auto [h, w] : {std::pair<int64_t, int64_t>{64, 96}, {80, 48}}) {
    const Reached r = positions_reaching_the_outputs(*m, last, at::randn({1, 3, h, w}, g, at::kFloat));
    const std::vector<int64_t> readout = m->readout_tokens(last, r.length);
    EXPECT_FALSE(readout.empty()) << h << "x" << w;
    EXPECT_EQ(as_set(readout), r.positions) << h << "x" << w << ", sequence " << r.length;
  }
  EXPECT_TRUE(m->readout_tokens("vit.embeddings.patch_embeddings.projection", 24).empty());
}
