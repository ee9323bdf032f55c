// SegFormer-B0 shapes (nvidia/segformer-b0-finetuned-ade-512-512 layout, random weights) against the Hugging Face
// goldens of ../shared/models/segformer_b0_random: every encoder stage, the logits and the post-processed label map.
// In the e2e label (tests/CMakeLists.txt): a 256x256 batch through the full B0 network.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/model.h"
#include "lorq/tasks/segmentation_post.h"
#include "shared_data.h"

using namespace lorq;

namespace {
double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}
}  // namespace

TEST(SegformerB0, GoldenB0Random) {
  const std::string dir = testdata::shared_path("models/segformer_b0_random");
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  c10::NoGradGuard ng;
  const auto g = read_all_tensors(SafetensorsFile::open(dir + "/golden.safetensors"), /*to_float=*/false);
  auto m = load_model(dir);
  EXPECT_EQ(m->architecture(), "segformer-b0");
  EXPECT_EQ(m->task(), TaskKind::Segmentation);
  EXPECT_EQ(m->num_labels(), 150);
  EXPECT_EQ(m->label(7), "bed ");  // the ADE20K names, trailing space included
  EXPECT_EQ(m->num_stages(), 8);
  // Every Linear (6 per block: q, k, v, out, dense1, dense2), 6 sr convs, 4 patch embeddings, 4 linear_c, fuse and
  // classifier.
  EXPECT_EQ(m->linear_layers().size(), size_t(8 * 6 + 6 + 4 + 4 + 2));

  const at::Tensor images = g.at("pixel_values");
  StageState x = m->embed(images);
  for (int i = 0; i < m->num_stages(); ++i) x = m->run_stage(i, x);
  ASSERT_EQ(x.size(), 4u);
  for (int s = 0; s < 4; ++s) {
    const at::Tensor& want = g.at("encoder_hidden_state_" + std::to_string(s));
    ASSERT_EQ(x[s].sizes(), want.sizes());
    const double d = max_abs(x[s], want);
    std::printf("b0 encoder_hidden_state_%d max abs diff %.3g\n", s, d);
    EXPECT_LT(d, 2e-5);  // the float32 noise floor of the last stage is 2.1e-6 (HF_GOLDENS.md)
  }
  const at::Tensor logits = m->finish(x).logits();
  ASSERT_EQ(logits.sizes(), g.at("logits").sizes());
  const double dl = max_abs(logits, g.at("logits"));
  std::printf("b0 logits max abs diff %.3g (max |logit| %.3g)\n", dl, g.at("logits").abs().max().item<double>());
  EXPECT_LT(dl, 1e-5);
  EXPECT_TRUE(at::equal(m->forward(images).logits(), logits));

  const at::Tensor target = g.at("post_target_size");
  const at::Tensor want = g.at("post_segmentation"), margin = g.at("post_top2_margin");
  const at::Tensor labels = segmentation_label_map(logits, target[0].item<int64_t>(), target[1].item<int64_t>());
  ASSERT_EQ(labels.sizes(), want.sizes());
  // Pixels whose top-2 margin is within twice the logits' tolerance may flip with float noise.
  const at::Tensor clear = margin > 2e-5;
  const int64_t compared = clear.sum().item<int64_t>(), differ = (labels.ne(want) & clear).sum().item<int64_t>();
  std::printf("b0 post_segmentation: %lld of %lld pixels compared, %lld differ (all pixels: %lld differ)\n",
              (long long)compared, (long long)want.numel(), (long long)differ,
              (long long)labels.ne(want).sum().item<int64_t>());
  EXPECT_GT(compared, want.numel() * 9 / 10);
  EXPECT_EQ(differ, 0);
}
