// RB-LRA: truncation ranks and error, the three branch inits, and merge exactness (branch folded == unfolded) on a
// random ViT and on the demo model.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "lorq/common/error.h"
#include "lorq/lraqvit/rb_lra.h"
#include "lraqvit_test_util.h"

using namespace lorq;
using namespace lorq::lraqvit;
using namespace lorq::lraqvit_test;

namespace {

// Perturbs every delta so that the branch is far from zero (the merge must hold for any trained value).
void perturb(std::vector<RbLraLayer>& layers, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  for (auto& l : layers) {
    l.delta_out.add_(at::randn(l.delta_out.sizes(), g) * 0.1);
    l.delta_in.add_(at::randn(l.delta_in.sizes(), g) * 0.1);
  }
}

// Outputs with the branch unfolded, merged into two matmuls, and multiplied out into the dense weight.
void expect_merge_exact(Model& model, std::vector<RbLraLayer>& layers, const at::Tensor& images) {
  c10::NoGradGuard no_grad;
  const at::Tensor dense = model.forward(images).logits();
  install_branches(model, layers, BranchForm::Unfolded);
  const at::Tensor unfolded = model.forward(images).logits();
  install_branches(model, layers, BranchForm::Training);
  const at::Tensor training = model.forward(images).logits();
  std::vector<MergedFactors> merged;
  for (const auto& l : layers) merged.push_back(l.merge());
  install_merged(model, merged);
  const at::Tensor folded = model.forward(images).logits();
  // The merge keeps r(m + n) parameters per layer.
  for (size_t i = 0; i < layers.size(); ++i) {
    EXPECT_EQ(merged[i].a.sizes(), layers[i].base_out.sizes());
    EXPECT_EQ(merged[i].b.size(0), layers[i].rank);
  }
  remove_overrides(model, layers);
  std::unique_ptr<Model> multiplied = model.clone();
  for (const auto& f : merged) multiplied->set_weight(f.layer, at::matmul(f.a, f.b));
  const at::Tensor dense_folded = multiplied->forward(images).logits();
  EXPECT_GT(max_rel_diff(unfolded, dense), 1e-3) << "the branch changed nothing: the test would not see a bad merge";
  EXPECT_LT(max_rel_diff(folded, unfolded), 2e-5);
  EXPECT_LT(max_rel_diff(training, unfolded), 2e-5);
  EXPECT_LT(max_rel_diff(dense_folded, unfolded), 2e-5);
  EXPECT_TRUE(at::equal(model.forward(images).logits(), dense)) << "overrides not removed";
}

}  // namespace

TEST(RbLra, DefaultRanksAreHalfTheSmallerSideOnQkvFc1Fc2) {
  auto m = random_vit(1);
  const auto layers = truncate_layers(*m, {});
  ASSERT_EQ(layers.size(), 6u);  // 2 blocks x {qkv, fc1, fc2}
  for (const auto& l : layers) {
    const auto& info = m->layer(l.name);
    EXPECT_EQ(l.rank, std::min(info.in_features, info.out_features) / 2) << l.name;
    EXPECT_EQ(l.name.find("proj"), std::string::npos);
  }
  RbLraSettings s;
  s.layer_kinds = {"proj", "fc1"};
  s.param_ratio = 0.5;
  const auto ratio = truncate_layers(*m, s);
  ASSERT_EQ(ratio.size(), 4u);
  for (const auto& l : ratio) {
    const auto& info = m->layer(l.name);
    const int64_t mm = info.out_features, nn = info.in_features;
    EXPECT_EQ(l.rank, int64_t(std::floor(0.5 * mm * nn / double(mm + nn)))) << l.name;
    EXPECT_LE(l.rank * (mm + nn), mm * nn / 2);
  }
  const RankSummary sum = rank_summary(ratio);
  EXPECT_LE(sum.factor_params, sum.dense_params / 2);
}

TEST(RbLra, ZeroInitIsTheBestRankRApproximation) {
  auto m = random_vit(2);
  for (const auto& l : truncate_layers(*m, {})) {
    const at::Tensor W = m->weight(l.name).to(at::kDouble);
    const at::Tensor S = at::linalg_svdvals(W);
    const at::Tensor Wr = at::matmul(l.base_out.to(at::kDouble), l.base_in.to(at::kDouble).t());
    // Eckart–Young: the squared error is the discarded singular values' energy.
    const double err = (W - Wr).pow(2).sum().item<double>();
    const double discarded = S.slice(0, l.rank).pow(2).sum().item<double>();
    EXPECT_NEAR(err, discarded, 1e-4 * discarded) << l.name;
    // V′ has orthonormal columns (Σ on the input side).
    const at::Tensor VtV = at::matmul(l.base_out.t(), l.base_out);
    EXPECT_TRUE(at::allclose(VtV, at::eye(l.rank), 1e-4, 1e-4)) << l.name;
    EXPECT_EQ(l.delta_out.abs().max().item<float>(), 0.f);
    EXPECT_EQ(l.delta_in.abs().max().item<float>(), 0.f);
  }
}

TEST(RbLra, WrReportedInitDoublesTheWeightErrorAtHalfRank) {
  // The spec's literal WR start (§2.3): W_r + P_del Σ_del Q_rᵀ, orthogonal to W_del, so the error doubles at r = k/2.
  auto m = random_vit(3);
  RbLraSettings s;
  s.init = BranchInit::WrReported;
  for (const auto& l : truncate_layers(*m, s)) {
    const at::Tensor W = m->weight(l.name).to(at::kDouble);
    const at::Tensor S = at::linalg_svdvals(W);
    const MergedFactors f = l.merge();
    const at::Tensor W0 = at::matmul(f.a.to(at::kDouble), f.b.to(at::kDouble));
    const double discarded = S.slice(0, l.rank).pow(2).sum().item<double>();
    EXPECT_NEAR((W - W0).pow(2).sum().item<double>(), 2 * discarded, 1e-3 * discarded) << l.name;
    EXPECT_EQ(l.delta_in.abs().max().item<float>(), 0.f);
  }
}

TEST(RbLra, RandomInitIsSmallAndSeeded) {
  auto m = random_vit(4);
  RbLraSettings s;
  s.init = BranchInit::Random;
  s.seed = 9;
  const auto a = truncate_layers(*m, s), b = truncate_layers(*m, s);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(at::equal(a[i].delta_out, b[i].delta_out));
    const double ratio =
        a[i].delta_in.pow(2).mean().sqrt().item<double>() / a[i].base_in.pow(2).mean().sqrt().item<double>();
    EXPECT_NEAR(ratio, 0.01, 0.003);
  }
}

TEST(RbLra, MergeIsExactOnARandomVit) {
  auto m = random_vit(5, 48, 3, 7);
  RbLraSettings s;
  s.init = BranchInit::Random;
  auto layers = truncate_layers(*m, s);
  perturb(layers, 6);
  at::Generator g = at::detail::createCPUGenerator(7);
  expect_merge_exact(*m, layers, at::randn({3, 3, 32, 32}, g));
}

TEST(RbLra, MergeIsExactOnTheDemoModel) {
  auto m = load_model(demo_model_dir());
  RbLraSettings s;
  s.init = BranchInit::WrReported;
  s.layer_kinds = {"qkv", "proj", "fc1", "fc2"};
  auto layers = truncate_layers(*m, s);
  ASSERT_EQ(layers.size(), 24u);
  perturb(layers, 8);
  expect_merge_exact(*m, layers, demo_images(*m, 4));
}

TEST(RbLra, BadSettingsAreClearErrors) {
  auto m = random_vit(6);
  RbLraSettings s;
  s.layer_kinds = {"qkv", "mlp"};
  try {
    truncate_layers(*m, s);
    FAIL() << "no error for an unknown layer kind";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'*.mlp'"), std::string::npos) << e.what();
  }
  s = {};
  s.rank_fraction = 0;
  EXPECT_THROW(truncate_layers(*m, s), Error);
  s = {};
  s.param_ratio = 1.5;
  EXPECT_THROW(truncate_layers(*m, s), Error);
  EXPECT_THROW(branch_init_from_string("wr"), Error);
}
