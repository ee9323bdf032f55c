// LFH: the batched-projection estimator against a slow reference (one ordinary backward pass per projection,
// weight gradients read from autograd), and the weighted SVD against its defining properties.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include "lorq/common/error.h"
#include "lorq/models/vit.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/quant/weighted_svd.h"

using namespace lorq;

namespace {

std::unique_ptr<VisionTransformer> tiny_model(uint64_t seed) {
  VitConfig c;
  c.embed_dim = 24;
  c.num_heads = 2;
  c.depth = 2;
  c.img_size = 16;
  c.patch_size = 4;
  c.mlp_ratio = 2.5;
  c.num_classes = 7;
  c.preprocessing.input_height = c.preprocessing.input_width = 16;
  auto m = VisionTransformer::create_random(c, seed);
  for (const auto& l : m->linear_layers()) m->set_weight(l.name, m->weight(l.name) * 15);
  return m;
}

// Σ_p (∂⟨logits, v_p⟩/∂W)², one backward pass per projection on the unmodified model.
std::map<std::string, at::Tensor> reference_squared_gradients(VisionTransformer& m, const at::Tensor& image,
                                                              const at::Tensor& V, bool accumulate) {
  c10::AutoGradMode on(true);
  std::map<std::string, at::Tensor> weights, out, running;
  for (const auto& l : m.linear_layers())
    if (l.low_rank_allowed) weights[l.name] = m.tensor(l.name + ".weight").requires_grad_(true);
  for (int64_t p = 0; p < V.size(0); ++p) {
    for (auto& [n, w] : weights)
      if (w.grad().defined()) w.mutable_grad().zero_();
    at::Tensor logits = m.forward(image.unsqueeze(0)).logits();
    (logits[0] * V[p]).sum().backward();
    for (auto& [n, w] : weights) {
      at::Tensor g = w.grad().clone();
      if (accumulate) {
        running[n] = running.count(n) ? running[n] + g : g;
        g = running[n];
      }
      out[n] = out.count(n) ? out[n] + g.pow(2) : g.pow(2);
    }
  }
  for (auto& [n, w] : weights) w.requires_grad_(false);
  return out;
}

}  // namespace

TEST(Sensitivity, BatchedProjectionsMatchOneBackwardPerProjection) {
  auto m = tiny_model(11);
  at::manual_seed(3);
  at::Tensor image = at::randn({3, 16, 16});
  at::Tensor V = at::randn({5, 7});
  for (bool accumulate : {false, true}) {
    std::map<std::string, at::Tensor> running;
    auto fast = lfh_squared_gradients(*m, image, {V}, accumulate ? &running : nullptr);
    auto ref = reference_squared_gradients(*m, image, V, accumulate);
    ASSERT_EQ(fast.size(), ref.size());
    for (const auto& [name, r] : ref) {
      const double err = (fast.at(name) - r).abs().max().item<double>() / (r.abs().max().item<double>() + 1e-30);
      EXPECT_LT(err, 1e-4) << name << (accumulate ? " (as coded)" : " (clean)");
    }
  }
  EXPECT_FALSE(m->has_linear_override("blocks.0.attn.qkv"));  // hooks removed afterwards
}

TEST(Sensitivity, ProjectionChunksGiveTheSameEstimate) {
  auto m = tiny_model(13);
  at::manual_seed(6);
  at::Tensor images = at::randn({2, 3, 16, 16});
  for (bool as_coded : {false, true}) {
    LfhOptions whole;
    whole.projections = 7;
    whole.as_coded_accumulation = as_coded;
    LfhOptions chunked = whole;
    chunked.projection_batch = 3;  // chunks of (1 probe,) 3, 3, 1
    LfhOptions tight = whole;
    tight.memory_budget_bytes = 1;  // no copy fits: after the probe, one projection at a time
    auto a = label_free_hessian(*m, images, whole);
    for (const LfhOptions* o : {&chunked, &tight}) {
      auto b = label_free_hessian(*m, images, *o);
      for (const auto& [name, t] : a) {
        const double err = (b.at(name) - t).abs().max().item<double>() / (t.abs().max().item<double>() + 1e-30);
        EXPECT_LT(err, 1e-5) << name << (as_coded ? " (as coded)" : " (clean)") << " chunk " << o->projection_batch
                             << " budget " << o->memory_budget_bytes;
      }
    }
  }
}

TEST(Sensitivity, EstimatorConvergesToDiagonalOfJtJ) {
  // With the projections set to every basis vector, Σ_c (J_cᵀ)² is exactly diag(JᵀJ): the random estimate with
  // many projections must approach it.
  auto m = tiny_model(12);
  at::manual_seed(4);
  at::Tensor images = at::randn({2, 3, 16, 16});
  std::map<std::string, at::Tensor> exact;
  for (int64_t k = 0; k < 2; ++k)
    for (auto& [n, t] : lfh_squared_gradients(*m, images[k], {at::eye(7)}))
      exact[n] = exact.count(n) ? exact[n] + t : t;
  LfhOptions o;
  o.projections = 2000;
  o.seed = 5;
  auto h = label_free_hessian(*m, images, o);
  for (const auto& [name, e] : exact) {
    at::Tensor want = e / 2;  // mean over images
    const double rel = (h.at(name) - want).norm().item<double>() / want.norm().item<double>();
    EXPECT_LT(rel, 0.15) << name;
  }
  EXPECT_TRUE(at::equal(h.at("patch_embed.proj"), at::ones({24, 48})));  // convs: H ≡ 1
}

TEST(WeightedSvd, ReconstructsAndSplits) {
  at::manual_seed(7);
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{17, 33}, {40, 9}, {1, 5}, {64, 64}}) {
    at::Tensor W = at::randn({m, n});
    at::Tensor H = at::rand({m, n}) + 0.01;
    for (FactorSplit split : {FactorSplit::U_SV, FactorSplit::US_V}) {
      LowRankFactors f = weighted_svd(W, H, split);
      const int64_t k = std::min(m, n);
      ASSERT_EQ(f.A.sizes(), (std::vector<int64_t>{m, k}));
      ASSERT_EQ(f.B.sizes(), (std::vector<int64_t>{k, n}));
      EXPECT_LT((at::mm(f.A, f.B) - W).norm().item<double>() / W.norm().item<double>(), 1e-5);
    }
  }
}

TEST(WeightedSvd, PlainSvdWithoutHessianAndTruncationOptimality) {
  at::manual_seed(8);
  at::Tensor W = at::randn({23, 31});
  LowRankFactors plain = weighted_svd(W, {});
  at::Tensor S = std::get<1>(at::linalg_svd(W, false));
  EXPECT_TRUE(at::allclose(plain.singular_values, S, 1e-4, 1e-5));
  // U_SV: B's rows have norms equal to the singular values (U has orthonormal columns when D = I).
  EXPECT_TRUE(at::allclose(plain.B.norm(2, 1), S, 1e-4, 1e-5));

  at::Tensor H = at::rand({23, 31}) * 10 + 0.1;
  LowRankFactors f = weighted_svd(W, H);
  at::Tensor d = f.row_weights.unsqueeze(1);
  for (int64_t r : {1, 3, 10}) {
    at::Tensor best = at::mm(f.A.slice(1, 0, r), f.B.slice(0, 0, r));
    const double err = ((W - best) * d).norm().item<double>();
    // Eckart–Young in the D-norm: the truncated product beats any other rank-r matrix, e.g. random ones and the
    // plain SVD's truncation.
    at::Tensor plain_r = at::mm(plain.A.slice(1, 0, r), plain.B.slice(0, 0, r));
    EXPECT_LE(err, ((W - plain_r) * d).norm().item<double>() * (1 + 1e-5));
    for (int t = 0; t < 5; ++t) {
      at::Tensor X = at::mm(at::randn({23, r}), at::randn({r, 31})) * 0.3;
      EXPECT_LE(err, ((W - X) * d).norm().item<double>());
    }
  }
}

TEST(WeightedSvd, ZeroMassRowsAreGuarded) {
  at::Tensor W = at::randn({6, 8});
  at::Tensor H = at::rand({6, 8});
  H[2].zero_();
  LowRankFactors f = weighted_svd(W, H);
  EXPECT_EQ(f.guarded_rows, 1);
  EXPECT_TRUE(at::isfinite(f.A).all().item<bool>());
  EXPECT_LT((at::mm(f.A, f.B) - W).norm().item<double>() / W.norm().item<double>(), 2e-3);
  EXPECT_THROW(weighted_svd(W, at::rand({6, 7})), Error);
}
