// YOLOS-tiny shapes (hustvl/yolos-tiny: 12 layers, 100 detection tokens, 91 COCO labels, position embeddings on a
// 50x83 grid interpolated to the input's 16x20) against the Hugging Face goldens of ../shared/models/
// yolos_tiny_random. Labelled e2e (tests/CMakeLists.txt): it loads a 26 MB checkpoint.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "lorq/io/tensor_io.h"
#include "lorq/models/yolos.h"
#include "shared_data.h"

using namespace lorq;

namespace {
double max_diff(const at::Tensor& a, const at::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return INFINITY;
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}
// The hidden states are not O(1) like the outputs; and the patch embedding is a GEMM on flattened patches rather
// than HF's convolution (so that a compressed export reloads bit-exactly): a few float32 steps of their largest value.
double hidden_tolerance(const at::Tensor& golden) { return 4e-6 * std::max(1.0, golden.abs().max().item<double>()); }
}  // namespace

TEST(YolosTiny, ReproducesTheHuggingFaceGoldens) {
  const std::string dir = testdata::shared_path("models/yolos_tiny_random");
  LORQ_REQUIRE_SHARED_FILE(dir + "/golden.safetensors");
  c10::NoGradGuard no_grad;
  const int threads = at::get_num_threads();
  at::set_num_threads(1);  // as the goldens were made
  std::unique_ptr<Model> loaded = load_model(dir);
  auto* m = dynamic_cast<YolosForObjectDetection*>(loaded.get());
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->num_labels(), 91);
  EXPECT_EQ(m->label(0), "N/A");
  EXPECT_EQ(m->label(1), "person");
  EXPECT_EQ(m->label(90), "toothbrush");
  EXPECT_EQ(m->config().grid_height(), 50);
  EXPECT_EQ(m->config().grid_width(), 83);
  const auto g = read_all_tensors(SafetensorsFile::open(dir + "/golden.safetensors"), false);

  // HF_GOLDENS.md: ~1e-6 on tiny's outputs (float32 noise 4e-8; the subtlest listed mistake, a tanh GELU, moves the
  // logits by 5.8e-6).
  constexpr double tol = 1e-6;
  const double pe = max_diff(m->interpolated_position_embeddings(16, 20), g.at("interpolated_position_embeddings"));
  EXPECT_LE(pe, tol);
  StageState s = m->embed(g.at("pixel_values"));
  const double embed = max_diff(s.at(0), g.at("embeddings"));
  EXPECT_LE(embed, hidden_tolerance(g.at("embeddings")));
  double layers = 0;
  for (int i = 0; i < m->num_stages(); ++i) {
    s = m->run_stage(i, s);
    const std::string key = "encoder_layer_" + std::to_string(i);
    if (g.count(key)) {
      const double d = max_diff(s.at(0), g.at(key));
      EXPECT_LE(d, hidden_tolerance(g.at(key))) << key;
      layers = std::max(layers, d);
    }
  }
  const double hidden = max_diff(m->last_hidden_state(s), g.at("last_hidden_state"));
  EXPECT_LE(hidden, hidden_tolerance(g.at("last_hidden_state")));
  const ModelOutputs out = m->finish(s);
  const double logits = max_diff(out.at("logits"), g.at("logits"));
  const double boxes = max_diff(out.at("boxes"), g.at("pred_boxes"));
  EXPECT_LE(logits, tol);
  EXPECT_LE(boxes, tol);
  std::printf("yolos_tiny_random max |diff|: interpolated PE %.3g, embeddings %.3g, encoder layers 0/11 %.3g, "
              "last hidden state %.3g, logits %.3g, boxes %.3g\n",
              pe, embed, layers, hidden, logits, boxes);
  at::set_num_threads(threads);
}
