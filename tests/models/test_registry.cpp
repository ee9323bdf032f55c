// The model registry: recognition by Hugging Face model_type, timm architecture name, then tensor shapes; an
// unknown architecture is an error naming the file and listing the supported ones. And Model::clone().
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lorq/common/error.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/registry.h"
#include "lorq/models/vit.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

VitConfig tiny() {
  VitConfig c;
  c.architecture = "vit_tiny_test_patch8_32";
  c.img_size = 32;
  c.patch_size = 8;
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 2;
  c.num_classes = 5;
  c.preprocessing.input_height = c.preprocessing.input_width = 32;
  return c;
}

std::string folder(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lorq_registry_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string load_error(const std::string& path) {
  try {
    load_model(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Registry, TimmNamesAndShapesFindTheVisionTransformer) {
  auto m = VisionTransformer::create_random(tiny(), 1);
  const std::string dir = folder("vit");
  write_tensors(dir + "/model.safetensors", m->named_tensors());
  auto inferred = load_model(dir);  // no config: the shapes decide
  EXPECT_EQ(inferred->family(), "timm VisionTransformer");
  EXPECT_EQ(inferred->task(), TaskKind::Classification);
  std::ofstream(dir + "/config.json") << vit_config_to_json(m->config());
  auto named = load_model(dir);  // timm's architecture name decides
  EXPECT_EQ(named->architecture(), "vit_tiny_test_patch8_32");
  EXPECT_EQ(named->num_labels(), 5);
  EXPECT_EQ(named->layer("head").role, LayerRole::Head);
  EXPECT_EQ(named->layer("patch_embed.proj").role, LayerRole::PatchEmbedding);
  EXPECT_EQ(named->layer("blocks.0.mlp.fc1").role, LayerRole::Hidden);
}

TEST(Registry, UnknownArchitecturesAreNamedWithTheSupportedList) {
  // A Hugging Face config of a model type this build does not have.
  const std::string hf = folder("hf");
  write_tensors(hf + "/model.safetensors", {{"conv.weight", at::zeros({4, 3, 3, 3})}});
  std::ofstream(hf + "/config.json") << R"({"model_type": "resnet", "num_labels": 10})";
  std::string e = load_error(hf);
  EXPECT_NE(e.find(hf + "/config.json"), std::string::npos) << e;
  EXPECT_NE(e.find("model_type 'resnet'"), std::string::npos) << e;
  EXPECT_NE(e.find("supported: " + supported_architectures()), std::string::npos) << e;
  // A timm config naming another architecture, with tensors that are not a ViT's.
  const std::string timm = folder("timm");
  write_tensors(timm + "/model.safetensors", {{"conv1.weight", at::zeros({4, 3, 7, 7})}});
  std::ofstream(timm + "/config.json") << R"({"architecture": "resnet50", "num_classes": 10})";
  e = load_error(timm);
  EXPECT_NE(e.find("resnet50"), std::string::npos) << e;
  EXPECT_NE(e.find("timm VisionTransformer"), std::string::npos) << e;
  // Bare tensors of nothing known.
  const std::string bare = folder("bare");
  write_tensors(bare + "/model.safetensors", {{"w", at::zeros({2, 2})}});
  e = load_error(bare + "/model.safetensors");
  EXPECT_NE(e.find("match no supported architecture"), std::string::npos) << e;
}

TEST(Registry, CloneIsADeepCopyWithTheSameOutputs) {
  c10::NoGradGuard ng;
  auto m = VisionTransformer::create_random(tiny(), 2);
  m->set_bias("blocks.0.attn.qkv", at::full({96}, 0.1f));  // a tensor created after construction is copied too
  auto c = m->clone();
  const at::Tensor x = at::randn({2, 3, 32, 32});
  EXPECT_TRUE(at::equal(c->forward(x).logits(), m->forward(x).logits()));
  c->set_weight("head", c->weight("head") * 0);
  EXPECT_FALSE(at::equal(c->forward(x).logits(), m->forward(x).logits()));  // the original is untouched
  EXPECT_TRUE(at::equal(c->tensor("blocks.0.attn.qkv.bias"), m->tensor("blocks.0.attn.qkv.bias")));
}
