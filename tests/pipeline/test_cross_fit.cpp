// Cross-fitted compensation (pipeline/cross_fit.h) on random layers: each fold's values are that fold's own GPTQ
// sweep, a tensor keeps its compensation exactly when its output error on the other fold's inputs (summed over both
// folds) is at most nearest rounding's, dropped tensors are nearest rounding everywhere, and the decision tells an
// overfitted compensation (barely more input rows than features) from one that generalises (many rows).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "lorq/common/error.h"
#include "lorq/pipeline/cross_fit.h"

using namespace lorq;

namespace {

// Inputs with correlated features (a random mixing of independent sources), as real activations have.
at::Tensor inputs(int64_t rows, int64_t features, const at::Tensor& mixing, at::Generator& g) {
  return at::mm(at::randn({rows, features}, g, at::kFloat), mixing).to(at::kDouble);
}

at::Tensor moment(const at::Tensor& X) { return at::mm(X.t(), X); }

struct Case {
  at::Tensor W, H[2];
  LayerCandidates before, after, folds[2];
};

Case run_case(int64_t m, int64_t n, int64_t rows_per_fold, uint64_t seed) {
  at::Generator g = at::detail::createCPUGenerator(seed);
  Case c;
  c.W = at::randn({m, n}, g, at::kFloat) * 0.1;
  const at::Tensor mixing = at::randn({n, n}, g, at::kFloat) / std::sqrt(double(n)) + at::eye(n);
  for (int k = 0; k < 2; ++k) c.H[k] = moment(inputs(rows_per_fold, n, mixing, g));
  CandidateSettings s;
  s.quantizer = Quantizer::Gptq;
  s.bits = {2, 3, 4, 6};
  s.factor_bits = {4, 6};
  const at::Tensor full = c.H[0] + c.H[1];
  c.before = build_layer_candidates("layer", c.W, {}, true, s, full);
  c.after = c.before;
  cross_fit_layer(c.after, c.folds, c.W, c.H, full, s.gptq);
  return c;
}

double out_of_fold(const at::Tensor& W, const at::Tensor V[2], const RowQuantParams& p, const at::Tensor H[2]) {
  return output_error(W, fake_quantize_rows(V[0], p), H[1]) + output_error(W, fake_quantize_rows(V[1], p), H[0]);
}

// One fold's sweep of W on the candidates' grids p through moment H; rows the candidates left at nearest rounding
// (their values are W's row) stay there.
at::Tensor fold_sweep(const at::Tensor& W, const at::Tensor& values, const RowQuantParams& p, const at::Tensor& H) {
  at::Tensor V = gptq_values(W, p, gptq_factorize(H));
  for (int64_t r = 0; r < W.size(0); ++r)
    if (at::equal(values[r], W[r])) V[r] = W[r];
  return V;
}

// The reference decision for Q(b): each fold's sweep judged on the other fold.
bool keeps_q(const Case& c, int b, at::Tensor V[2]) {
  const RowQuantParams& p = c.before.weight_params.at(b);
  for (int k = 0; k < 2; ++k) V[k] = fold_sweep(c.W, c.before.weight_values.at(b), p, c.H[k]);
  const at::Tensor near[2] = {c.W, c.W};
  return out_of_fold(c.W, V, p, c.H) <= out_of_fold(c.W, near, p, c.H);
}

}  // namespace

TEST(CrossFit, FoldValuesAndDecisionsMatchTheReference) {
  for (auto [m, n, rows, seed] :
       {std::tuple<int64_t, int64_t, int64_t, uint64_t>{13, 37, 45, 1}, {7, 24, 400, 2}, {20, 11, 15, 3}}) {
    const Case c = run_case(m, n, rows, seed);
    for (const auto& [b, value] : c.before.weight_values) {
      at::Tensor V[2];
      // Only what the in-sample guard compensated is cross-fitted at all.
      const bool keep = !at::equal(value, c.W) && keeps_q(c, b, V);
      EXPECT_EQ(c.after.weight_values.count(b) == 1, keep) << m << "x" << n << " Q" << b;
      for (int k = 0; k < 2; ++k) {
        EXPECT_EQ(c.folds[k].weight_values.count(b) == 1, keep);
        if (keep) {
          EXPECT_TRUE(at::equal(c.folds[k].weight_values.at(b), V[k])) << "fold " << k << " Q" << b;
        }
      }
      // Kept: the values fitted on all images are unchanged; dropped: nearest rounding of W, on the range search's
      // grid where the rows had chosen theirs for the compensation (row_grid_max_bits), on the same grid otherwise.
      LayerOption q;
      q.kind = OptionKind::Quant;
      q.bits = b;
      const RowQuantParams nearest_grid = b <= GptqSettings().row_grid_max_bits
                                              ? search_row_ranges(c.W, b, RangeError::Plain)
                                              : c.before.weight_params.at(b);
      EXPECT_TRUE(
          at::equal(compressed_weight(c.after, q, c.W), keep ? fake_quantize_rows(value, c.before.weight_params.at(b))
                                                             : fake_quantize_rows(c.W, nearest_grid)))
          << m << "x" << n << " Q" << b;
      if (!keep) {
        EXPECT_TRUE(at::equal(c.after.weight_params.at(b).scale, nearest_grid.scale));
        for (int k = 0; k < 2; ++k) EXPECT_TRUE(at::equal(c.folds[k].weight_params.at(b).scale, nearest_grid.scale));
      }
    }
    // Low-rank: every second factor kept in a fold is the sweep of A through that fold's B̃ moment.
    for (const auto& [pair, value] : c.after.a_values) {
      const auto [ba, bb] = pair;
      for (int k = 0; k < 2; ++k) {
        ASSERT_TRUE(c.folds[k].a_values.count(pair));
        const at::Tensor Bt =
            fake_quantize_rows(factor_b_source(c.folds[k], bb), c.before.b_params.at(bb)).to(at::kDouble);
        GptqSettings rank_order;
        rank_order.act_order = false;
        const at::Tensor A = gptq_values(c.before.factors.A, c.before.a_params.at(ba),
                                         gptq_factorize(at::mm(at::mm(Bt, c.H[k]), Bt.t()), rank_order), rank_order);
        EXPECT_TRUE(at::equal(c.folds[k].a_values.at(pair), A)) << "fold " << k;
      }
    }
    for (const auto& [bb, value] : c.after.b_values) {
      EXPECT_TRUE(at::equal(value, c.before.b_values.at(bb)));
    }
  }
}

TEST(CrossFit, DropsOverfittedCompensationAndKeepsTheOneThatGeneralises) {
  // Many rows per feature: the compensation generalises and is kept at every bit width.
  int dropped_many = 0, dropped_few = 0, compensated_few = 0;
  for (uint64_t seed : {11, 12, 13}) {
    const Case many = run_case(16, 40, 2000, seed);
    for (const auto& [b, v] : many.before.weight_values) dropped_many += many.after.weight_values.count(b) == 0;
    // Barely more rows than features: in sample the compensation still wins (the guard kept it), out of fold it
    // often loses.
    const Case few = run_case(16, 40, 42, seed);
    for (const auto& [b, v] : few.before.weight_values) {
      const bool in_sample = !at::equal(v, few.W);
      compensated_few += in_sample;
      dropped_few += in_sample && few.after.weight_values.count(b) == 0;
    }
  }
  EXPECT_EQ(dropped_many, 0);
  EXPECT_GT(compensated_few, 0);
  EXPECT_GT(dropped_few, 0);
}

TEST(CrossFit, NoFoldMomentMeansNearestEverywhere) {
  Case c = run_case(9, 20, 100, 5);
  LayerCandidates folds[2];
  const at::Tensor one_fold[2] = {c.H[0], at::Tensor()};
  LayerCandidates l = c.before;
  cross_fit_layer(l, folds, c.W, one_fold, c.H[0], {});
  EXPECT_TRUE(l.weight_values.empty() && l.a_values.empty() && l.b_values.empty());
  for (int k = 0; k < 2; ++k)
    EXPECT_TRUE(folds[k].weight_values.empty() && folds[k].a_values.empty() && folds[k].b_values.empty());
}

TEST(CrossFit, CalibrationFoldChecksItsRange) {
  Calibration c;
  c.images = at::zeros({4, 3, 2, 2});
  EXPECT_THROW(calibration_fold(c, 2, 2), Error);
  EXPECT_THROW(calibration_fold(c, -1, 2), Error);
  EXPECT_THROW(calibration_fold(c, 0, 5), Error);
}

TEST(CrossFit, SharedImagesFitBothFoldsButJudgeNeither) {
  // Moments of images no fold is measured on (CandidateSettings::gptq_images) join both folds' fits; each fold is
  // still judged on the other fold's own inputs alone.
  for (auto [m, n, rows, seed] : {std::tuple<int64_t, int64_t, int64_t, uint64_t>{11, 29, 25, 21}, {6, 17, 300, 22}}) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    const at::Tensor W = at::randn({m, n}, g, at::kFloat) * 0.1;
    const at::Tensor mixing = at::randn({n, n}, g, at::kFloat) / std::sqrt(double(n)) + at::eye(n);
    const at::Tensor own[2] = {moment(inputs(rows, n, mixing, g)), moment(inputs(rows, n, mixing, g))};
    const at::Tensor shared = moment(inputs(3 * rows, n, mixing, g));
    const at::Tensor fit[2] = {own[0] + shared, own[1] + shared};
    const at::Tensor full = own[0] + own[1] + shared;
    CandidateSettings s;
    s.quantizer = Quantizer::Gptq;
    s.bits = {2, 3, 4};
    s.factor_bits = {4};
    const LayerCandidates before = build_layer_candidates("layer", W, {}, true, s, full);
    LayerCandidates after = before, folds[2];
    cross_fit_layer(after, folds, W, fit, full, s.gptq, own);
    int kept = 0;
    for (const auto& [b, value] : before.weight_values) {
      const RowQuantParams& p = before.weight_params.at(b);
      at::Tensor V[2];
      for (int k = 0; k < 2; ++k) V[k] = fold_sweep(W, value, p, fit[k]);
      const at::Tensor near[2] = {W, W};
      const bool keep = !at::equal(value, W) && out_of_fold(W, V, p, own) <= out_of_fold(W, near, p, own);
      EXPECT_EQ(after.weight_values.count(b) == 1, keep) << m << "x" << n << " Q" << b;
      if (keep) {
        ++kept;
        for (int k = 0; k < 2; ++k) EXPECT_TRUE(at::equal(folds[k].weight_values.at(b), V[k])) << "fold " << k;
      }
    }
    if (rows > n * 4) {
      EXPECT_GT(kept, 0);  // many rows per feature: compensation generalises
    }
  }
}
