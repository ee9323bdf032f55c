#include <gtest/gtest.h>

#include "lorq/common/error.h"
#include "lorq/models/vit_config.h"
#include "shared_data.h"

using namespace lorq;

TEST(VitConfig, ReadsTimmConfig) {
  const std::string path = testdata::shared_path("models/deit_tiny_patch16_224/config.json");
  LORQ_REQUIRE_SHARED_FILE(path);
  VitConfig c = read_vit_config(path);
  EXPECT_EQ(c.architecture, "deit_tiny_patch16_224");
  EXPECT_EQ(c.embed_dim, 192);
  EXPECT_EQ(c.depth, 12);
  EXPECT_EQ(c.num_heads, 3);
  EXPECT_EQ(c.patch_size, 16);
  EXPECT_EQ(c.img_size, 224);
  EXPECT_EQ(c.num_classes, 1000);
  EXPECT_EQ(c.preprocessing.interpolation, "bicubic");
  EXPECT_DOUBLE_EQ(c.preprocessing.crop_pct, 0.875);
  EXPECT_FLOAT_EQ(c.preprocessing.mean[1], 0.456f);
  EXPECT_FLOAT_EQ(c.preprocessing.std[2], 0.225f);
  ASSERT_EQ(c.label_names.size(), 1000u);
  EXPECT_EQ(c.label_names[0], "tench");
}

TEST(VitConfig, InfersMissingFieldsFromShapes) {
  VitConfig c = parse_vit_config("{}", "mem.json");
  std::map<std::string, std::vector<int64_t>> shapes = {
      {"patch_embed.proj.weight", {384, 3, 16, 16}}, {"cls_token", {1, 1, 384}}, {"pos_embed", {1, 197, 384}},
      {"head.weight", {10, 384}},
  };
  for (int i = 0; i < 3; ++i) {
    const std::string p = "blocks." + std::to_string(i);
    shapes[p + ".attn.qkv.weight"] = {1152, 384};
    shapes[p + ".attn.qkv.bias"] = {1152};
    shapes[p + ".mlp.fc1.weight"] = {1536, 384};
  }
  complete_vit_config(c, shapes, "mem.safetensors");
  EXPECT_EQ(c.embed_dim, 384);
  EXPECT_EQ(c.depth, 3);
  EXPECT_EQ(c.num_heads, 6);
  EXPECT_EQ(c.patch_size, 16);
  EXPECT_EQ(c.img_size, 224);
  EXPECT_EQ(c.num_classes, 10);
  EXPECT_DOUBLE_EQ(c.mlp_ratio, 4.0);
  EXPECT_TRUE(c.qkv_bias);
}

TEST(VitConfig, ArchitectureNameGivesPatchAndSize) {
  VitConfig c = parse_vit_config(R"({"architecture": "vit_small_patch32_384"})", "x.json");
  EXPECT_EQ(c.patch_size, 32);
  EXPECT_EQ(c.img_size, 384);
}

TEST(VitConfig, RejectsBadInputWithTheFileName) {
  auto expect_error = [](const std::string& text, const std::string& needle) {
    try {
      parse_vit_config(text, "bad/config.json");
      FAIL() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad/config.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("{not json", "invalid JSON");
  expect_error("[1,2]", "not a JSON object");
  expect_error(R"({"model_args": {"embed_dim": "wide"}})", "embed_dim");
  expect_error(R"({"pretrained_cfg": {"mean": [0.5]}})", "mean");
  expect_error(R"({"pretrained_cfg": {"std": [0.5, 0, 0.5]}})", "std");
  expect_error(R"({"pretrained_cfg": {"interpolation": "lanczos9"}})", "interpolation");
  EXPECT_THROW(read_vit_config("/nonexistent/config.json"), Error);
}

TEST(VitConfig, ShapeMismatchIsAnError) {
  VitConfig c = parse_vit_config(R"({"model_args": {"embed_dim": 192, "depth": 4}})", "c.json");
  std::map<std::string, std::vector<int64_t>> shapes = {
      {"patch_embed.proj.weight", {192, 3, 16, 16}}, {"cls_token", {1, 1, 192}}, {"pos_embed", {1, 197, 192}},
      {"head.weight", {1000, 192}}, {"blocks.0.attn.qkv.weight", {576, 192}}};
  EXPECT_THROW(complete_vit_config(c, shapes, "m.safetensors"), Error);  // depth 4 vs 1 block
  shapes.erase("patch_embed.proj.weight");
  VitConfig d;
  EXPECT_THROW(complete_vit_config(d, shapes, "m.safetensors"), Error);
}

TEST(VitConfig, JsonRoundTrip) {
  VitConfig c;
  c.architecture = "vit_demo_patch8_64";
  c.img_size = 64;
  c.patch_size = 8;
  c.embed_dim = 128;
  c.depth = 6;
  c.num_heads = 2;
  c.num_classes = 6;
  c.label_names = {"a", "b", "c", "d", "e", "f"};
  c.preprocessing.crop_pct = 1.0;
  c.preprocessing.input_height = c.preprocessing.input_width = 64;
  VitConfig d = parse_vit_config(vit_config_to_json(c), "rt.json");
  EXPECT_EQ(d.architecture, c.architecture);
  EXPECT_EQ(d.embed_dim, 128);
  EXPECT_EQ(d.depth, 6);
  EXPECT_EQ(d.num_heads, 2);
  EXPECT_EQ(d.label_names, c.label_names);
  EXPECT_EQ(d.preprocessing.input_height, 64);
  EXPECT_DOUBLE_EQ(d.preprocessing.crop_pct, 1.0);
}
