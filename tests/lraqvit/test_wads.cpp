// WADS: folding any positive scale at every point preserves the function with quantization off (float noise only),
// and the learned scales lower the weight-aware quantized error.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "lorq/common/error.h"
#include "lorq/lraqvit/wads.h"
#include "lraqvit_test_util.h"

using namespace lorq;
using namespace lorq::lraqvit;
using namespace lorq::lraqvit_test;

namespace {

FactorMap merged_factors(Model& m, const std::vector<std::string>& kinds, uint64_t seed) {
  RbLraSettings s;
  s.layer_kinds = kinds;
  s.init = BranchInit::Random;
  s.seed = seed;
  FactorMap f;
  for (const auto& l : truncate_layers(m, s)) f[l.name] = l.merge();
  return f;
}

at::Tensor merged_forward(Model& m, const FactorMap& f, const at::Tensor& images) {
  c10::NoGradGuard no_grad;
  std::vector<MergedFactors> list;
  for (const auto& [name, x] : f) list.push_back(x);
  install_merged(m, list);
  const at::Tensor y = m.forward(images).logits();
  m.clear_linear_overrides();
  return y;
}

void expect_random_folds_preserve(Model& m, FactorMap f, const at::Tensor& images, size_t expected_points) {
  const at::Tensor before = merged_forward(m, f, images);
  const auto points = wads_points(m, f);
  EXPECT_EQ(points.size(), expected_points);
  at::Generator g = at::detail::createCPUGenerator(3);
  for (const WadsPoint& p : points) {
    EXPECT_EQ(p.name.find("fc2.in"), std::string::npos) << "fc2's input cannot be folded";
    const int64_t c = consumer_weight(m, f, p).size(1);
    fold_scale(m, f, p, at::exp(at::randn({c}, g)));  // scales from about 0.05 to 20
  }
  const at::Tensor after = merged_forward(m, f, images);
  EXPECT_LT(max_rel_diff(after, before), 5e-5);
}

}  // namespace

TEST(Wads, FoldingPreservesTheFunctionOnARandomVit) {
  at::Generator g = at::detail::createCPUGenerator(1);
  const at::Tensor images = at::randn({3, 3, 32, 32}, g);
  {
    auto m = random_vit(11, 48, 2, 5);
    // Per block: norm1, norm2, proj input, and the bottlenecks of qkv, fc1, fc2.
    expect_random_folds_preserve(*m, merged_factors(*m, {"qkv", "fc1", "fc2"}, 2), images, 12);
  }
  {
    // Dense qkv and proj: the v rows of a dense qkv, and every consumer's dense columns.
    auto m = random_vit(12, 48, 2, 5);
    expect_random_folds_preserve(*m, merged_factors(*m, {"fc1"}, 3), images, 8);
  }
}

TEST(Wads, FoldingPreservesTheFunctionOnTheDemoModel) {
  auto m = load_model(demo_model_dir());
  expect_random_folds_preserve(*m, merged_factors(*m, {"qkv", "proj", "fc1", "fc2"}, 4), demo_images(*m, 4), 42);
}

TEST(Wads, LearnedScalesLowerTheQuantizedErrorAndKeepTheFunction) {
  auto m = load_model(demo_model_dir());
  FactorMap f = merged_factors(*m, {"qkv", "fc1", "fc2"}, 5);
  const at::Tensor images = demo_images(*m, 16);
  const at::Tensor before = merged_forward(*m, f, images);
  WadsSettings s;
  s.activations.bits = 4;  // coarse activations make the outlier channels matter
  s.weight_bits = 4;
  s.steps = 30;
  s.images = 8;
  std::vector<Progress> progress;
  JobControl job;
  job.progress = [&](const Progress& p) { progress.push_back(p); };
  const auto results = apply_wads(*m, f, images, s, job);
  ASSERT_EQ(results.size(), 36u);
  EXPECT_EQ(progress.size(), 36u);
  double identity = 0, final = 0;
  for (const auto& r : results) {
    EXPECT_LE(r.final_error, r.identity_error) << r.point.name;
    EXPECT_LE(r.final_error, r.initial_error) << r.point.name;
    identity += r.identity_error;
    final += r.final_error;
  }
  EXPECT_LT(final, 0.9 * identity) << "WADS bought nothing";
  EXPECT_LT(max_rel_diff(merged_forward(*m, f, images), before), 5e-5);
}

TEST(Wads, ClosedFormStartHelpsOnChannelOutliers) {
  at::Generator g = at::detail::createCPUGenerator(8);
  at::Tensor X = at::randn({300, 37}, g);
  X.select(1, 3).mul_(40);
  X.select(1, 20).mul_(25);
  const at::Tensor W = at::randn({29, 37}, g) * 0.1;
  WadsSettings s;
  s.activations.bits = 6;
  const at::Tensor init = (X.abs().amax(0) / W.abs().amax(0)).sqrt();
  EXPECT_LT(wads_error(X, W, init, s), 0.5 * wads_error(X, W, at::ones({37}), s));
}

TEST(Wads, BadScalesAreClearErrors) {
  auto m = random_vit(13);
  FactorMap f = merged_factors(*m, {"qkv"}, 1);
  const auto points = wads_points(*m, f);
  ASSERT_FALSE(points.empty());
  EXPECT_THROW(fold_scale(*m, f, points[0], at::ones({5})), Error);
  EXPECT_THROW(fold_scale(*m, f, points[0], at::zeros({48})), Error);
}
