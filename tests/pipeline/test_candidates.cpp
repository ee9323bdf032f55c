// Candidates: the prefix-sum local loss against explicit per-rank reconstruction, the Pareto filter against an
// O(n²) definition, and the spec's self-checks (§16.3-16.4) on real-shaped random layers.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <random>

#include "lorq/pipeline/candidates.h"

using namespace lorq;

TEST(Candidates, PrefixSumLossMatchesExplicitReconstruction) {
  at::manual_seed(1);
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{13, 29}, {31, 7}, {24, 24}}) {
    const int64_t k = std::min(m, n);
    at::Tensor W = at::randn({m, n}), A = at::randn({m, k}), B = at::randn({k, n}) * 0.3, h = at::rand({m}) + 0.1;
    at::Tensor fast = low_rank_local_losses(W, A, B, h);
    for (int64_t r = 1; r <= k; ++r) {
      at::Tensor Wr = at::zeros({m, n}, at::kDouble);
      for (int64_t i = 0; i < r; ++i)
        Wr += at::outer(A.select(1, i).to(at::kDouble), B.select(0, i).to(at::kDouble));
      const double ref = ((W.to(at::kDouble) - Wr).pow(2).sum(1) * h.to(at::kDouble)).sum().item<double>() / (m * n);
      EXPECT_NEAR(fast[r - 1].item<double>(), ref, 1e-9 * std::max(1.0, ref)) << m << "x" << n << " r=" << r;
    }
  }
}

TEST(Candidates, ParetoFilterMatchesDefinition) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<std::pair<double, double>> pts;
    const int n = 1 + rng() % 30;
    for (int i = 0; i < n; ++i) pts.emplace_back(rng() % 8, rng() % 8);  // many ties on purpose
    std::vector<size_t> want;
    for (int i = 0; i < n; ++i) {
      bool dominated = false;
      for (int j = 0; j < n && !dominated; ++j) {
        if (j == i) continue;
        const bool le = pts[j].first <= pts[i].first && pts[j].second <= pts[i].second;
        const bool tie = pts[j] == pts[i];
        // Strictly better somewhere, or an identical point earlier in the list (one of two ties is kept).
        if (le && (!tie || j < i)) dominated = true;
      }
      if (!dominated) want.push_back(i);
    }
    EXPECT_EQ(pareto_front(pts), want) << "trial " << trial;
  }
}

TEST(Candidates, LayerFrontFollowsTheSpec) {
  at::manual_seed(5);
  const int64_t m = 48, n = 20;
  // A layer with decaying spectrum, like trained weights.
  at::Tensor W = at::mm(at::randn({m, n}) * at::linspace(1.0, 0.05, n).unsqueeze(0), at::randn({n, n})) * 0.1;
  at::Tensor H = at::rand({m, n}) + 0.05;
  LayerCandidates c = build_layer_candidates("layer", W, H, true);
  int quant = 0;
  std::map<std::pair<int, int>, std::vector<LayerOption>> groups;
  for (const auto& o : c.options) {
    if (o.kind == OptionKind::Quant) {
      ++quant;
      EXPECT_EQ(o.bytes, o.bits * m * n / 8);
    } else {
      EXPECT_GT(o.rank, 1);
      EXPECT_EQ(o.bytes, o.rank * (m * o.bits_a + n * o.bits_b) / 8);
      groups[{o.bits_a, o.bits_b}].push_back(o);
    }
  }
  EXPECT_EQ(quant, 5);
  EXPECT_FALSE(groups.empty());
  for (auto& [pair, g] : groups)  // §16.4: Λ strictly decreasing in r within a bit pair
    for (size_t i = 1; i < g.size(); ++i) {
      EXPECT_GT(g[i].rank, g[i - 1].rank);
      EXPECT_LT(g[i].local_loss, g[i - 1].local_loss);
    }
  // Λ of an option equals the loss of its compressed weight.
  at::Tensor hbar = std::get<0>(H.max(1)).to(at::kDouble);
  for (const auto& o : c.options) {
    at::Tensor Wq = compressed_weight(c, o, W);
    const double loss = ((W.to(at::kDouble) - Wq.to(at::kDouble)).pow(2).sum(1) * hbar).sum().item<double>() / (m * n);
    EXPECT_NEAR(o.local_loss, loss, 1e-6 * std::max(loss, 1e-6)) << o.label();
  }
}

TEST(Candidates, ConvLayersGetQuantizationOnly) {
  at::Tensor W = at::randn({16, 48});
  LayerCandidates c = build_layer_candidates("patch_embed.proj", W, {}, false);
  ASSERT_EQ(c.options.size(), 5u);
  for (const auto& o : c.options) EXPECT_EQ(o.kind, OptionKind::Quant);
}
