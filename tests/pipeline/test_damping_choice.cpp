// GPTQ's damping chosen by two-fold cross-validation (pipeline/damping_choice.h): each fold's fit judged on the other
// fold's inputs against an explicit sum over rows; the principle (few input rows call for more damping than many)
// on synthetic layers with odd sizes; the choice on the embedded demo against the per-layer scores it averages; and
// the session's automatic damping.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/io/images.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/damping_choice.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/quant/quantizer.h"
#include "lorq/session/api.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

// Inputs with correlated features, as a layer inside a network sees them: [rows, n].
at::Tensor correlated_inputs(int64_t rows, int64_t n, const at::Tensor& mix) {
  return at::matmul(at::randn({rows, n}, at::kDouble), mix);
}

// Σ over W's rows of dᵀ J d, d the row of W − Ŵ, one row and one element at a time.
double explicit_output_error(const at::Tensor& W, const at::Tensor& W_hat, const at::Tensor& J) {
  const at::Tensor D = (W.to(at::kDouble) - W_hat.to(at::kDouble)).contiguous();
  const at::Tensor Jc = J.to(at::kDouble).contiguous();
  const double* d = D.data_ptr<double>();
  const double* j = Jc.data_ptr<double>();
  const int64_t m = D.size(0), n = D.size(1);
  double sum = 0;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t a = 0; a < n; ++a)
      for (int64_t b = 0; b < n; ++b) sum += d[r * n + a] * j[a * n + b] * d[r * n + b];
  return sum;
}

}  // namespace

TEST(DampingChoice, EachFoldsFitIsJudgedOnTheOtherFoldsInputs) {
  at::manual_seed(3);
  const int64_t m = 11, n = 17;
  const at::Tensor W = at::randn({m, n});
  const at::Tensor mix = at::eye(n, at::kDouble) + 0.4 * at::randn({n, n}, at::kDouble);
  // Folds of very different sizes: a mix-up of fit and judge would show.
  const at::Tensor X0 = correlated_inputs(23, n, mix), X1 = correlated_inputs(301, n, mix);
  const at::Tensor judge[2] = {at::matmul(X0.t(), X0), at::matmul(X1.t(), X1)};
  const at::Tensor fit[2] = {judge[0], judge[1]};
  const RowQuantParams p = search_row_ranges(W, 3, RangeError::Plain);
  for (double damping : {0.01, 0.3}) {
    GptqSettings s;
    s.damping = damping;
    double want = 0;
    for (int k = 0; k < 2; ++k) {
      const at::Tensor V = gptq_values(W, p, gptq_factorize(fit[k], s), s);
      want += explicit_output_error(W, fake_quantize_rows(V.to(at::kFloat), p), judge[1 - k]);
    }
    const auto [compensated, nearest] = cross_validated_errors(W, p, fit, judge, damping);
    EXPECT_NEAR(compensated, want, 1e-9 * want) << damping;
    const double nearest_want = explicit_output_error(W, fake_quantize_rows(W, p), judge[0] + judge[1]);
    EXPECT_NEAR(nearest, nearest_want, 1e-9 * nearest_want);
  }
}

// The out-of-fold penalty of too little damping (its score above the best one's) is what the choice guards against:
// it grows as the folds hold fewer input rows per input feature.
TEST(DampingChoice, TooLittleDampingCostsMoreOnFewInputRows) {
  at::manual_seed(5);
  const std::vector<double> dampings{0.001, 0.01, 0.1, 1.0};
  // Each damping's score over a few random layers: Σ log(compensated / nearest), out of fold.
  auto scores = [&](int64_t rows_per_fold, int64_t m, int64_t n) {
    const at::Tensor mix = at::eye(n, at::kDouble) + 0.5 * at::randn({n, n}, at::kDouble);
    std::vector<double> score(dampings.size(), 0.0);
    for (int trial = 0; trial < 4; ++trial) {
      const at::Tensor W = at::randn({m, n});
      const RowQuantParams p = search_row_ranges(W, 3, RangeError::Plain);
      at::Tensor judge[2];
      for (int k = 0; k < 2; ++k) {
        const at::Tensor X = correlated_inputs(rows_per_fold, n, mix);
        judge[k] = at::matmul(X.t(), X);
      }
      for (size_t d = 0; d < dampings.size(); ++d) {
        const auto [compensated, nearest] = cross_validated_errors(W, p, judge, judge, dampings[d]);
        score[d] += std::log(compensated / nearest);
      }
    }
    return score;
  };
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{9, 33}, {20, 47}}) {
    const std::vector<double> scarce = scores(n + n / 4, m, n), plenty = scores(60 * n, m, n);
    const double best_scarce = *std::min_element(scarce.begin(), scarce.end());
    const double best_plenty = *std::min_element(plenty.begin(), plenty.end());
    for (size_t d = 0; d < 2; ++d)  // 0.001 and 0.01
      EXPECT_GT(scarce[d] - best_scarce, plenty[d] - best_plenty) << m << "x" << n << " damping " << dampings[d];
    // Compensation pays either way: the best damping beats nearest rounding out of fold.
    EXPECT_LT(best_scarce, 0.0);
    EXPECT_LT(best_plenty, best_scarce);
  }
}

TEST(DampingChoice, OnTheDemoTheChoiceIsTheBestWeightedMeanRatioOverLayers) {
  init_threads();
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty()) << "the embedded demo (datasets/) was not found";
  auto model = load_model(demo.model_dir);
  const ImageSet set = open_labels_csv(demo.labels_csv);
  const at::Tensor images = load_batch(set, 0, 16, model->preprocessing(), 2).images;
  std::map<std::string, InputMoment> halves[2] = {layer_input_moments(*model, images.slice(0, 0, 8)),
                                                  layer_input_moments(*model, images.slice(0, 8, 16))};
  LfhOptions lo;
  lo.projections = 4;
  const auto lfh = label_free_hessian(*model, images.slice(0, 0, 2), lo);
  const std::vector<double> candidates{0.01, 0.1, 1.0};
  const DampingChoice c = choose_gptq_damping(*model, halves, nullptr, lfh, candidates);
  ASSERT_EQ(c.scores.size(), candidates.size());
  ASSERT_GT(c.layers, 0);
  // The scores from the per-layer terms, the layers with a usable moment on both sides, each weighted by its nearest
  // rounding's LFH-weighted squared error.
  std::vector<double> sum(candidates.size(), 0.0);
  double total = 0;
  int layers = 0;
  for (const auto& l : model->linear_layers()) {
    at::Tensor fit[2], judge[2];
    for (int k = 0; k < 2; ++k) {
      fit[k] = compensation_moment(halves[k], l.name);
      judge[k] = halves[k].at(l.name).xtx;
    }
    if (!fit[0].defined() || !fit[1].defined()) continue;
    const at::Tensor W = model->weight(l.name).reshape({l.out_features, l.in_features}).to(at::kFloat);
    const at::Tensor H = lfh.at(l.name).reshape(W.sizes());
    const RowQuantParams p = search_row_ranges(W, 3, RangeError::Hessian, H);
    const double weight = (H * (W - fake_quantize_rows(W, p)).pow(2)).sum().item<double>();
    for (size_t d = 0; d < candidates.size(); ++d) {
      const auto [compensated, nearest] = cross_validated_errors(W, p, fit, judge, candidates[d]);
      sum[d] += weight * compensated / nearest;
    }
    total += weight;
    ++layers;
  }
  EXPECT_EQ(c.layers, layers);
  size_t best = 0;
  for (size_t d = 0; d < candidates.size(); ++d) {
    EXPECT_NEAR(c.scores[d].second, sum[d] / total, 1e-5 * sum[d] / total) << candidates[d];
    if (sum[d] < sum[best]) best = d;
  }
  EXPECT_EQ(c.damping, candidates[best]);
  EXPECT_THROW(choose_gptq_damping(*model, halves, nullptr, lfh, {}), Error);
  // No layer with a usable moment (halves of too few images): the base damping, unscored.
  const std::map<std::string, InputMoment> no_moments[2];
  GptqSettings base;
  base.damping = 0.07;
  const DampingChoice none = choose_gptq_damping(*model, no_moments, nullptr, lfh, candidates, base);
  EXPECT_EQ(none.layers, 0);
  EXPECT_EQ(none.damping, 0.07);
  EXPECT_TRUE(none.scores.empty());
}

TEST(DampingChoice, TheSessionChoosesItUnlessItIsSet) {
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty());
  api::AnalysisSettings s = api::AnalysisSettings::fast();
  s.quantizer = "gptq";
  s.estimate = true;
  ASSERT_EQ(s.gptq_damping, 0.0);  // automatic by default
  auto chosen = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", s, "");
  chosen->analyze({});
  const std::vector<double> choices{0.01, 0.03, 0.1, 0.3};
  EXPECT_NE(std::find(choices.begin(), choices.end(), chosen->gptq_damping()), choices.end()) << chosen->gptq_damping();
  ASSERT_EQ(chosen->gptq_damping_scores().size(), choices.size());
  bool timed = false;
  for (const auto& [stage, seconds] : chosen->stage_seconds()) timed |= stage == "damping";
  EXPECT_TRUE(timed);

  s.gptq_damping = 0.3;
  auto set = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", s, "");
  set->analyze({});
  EXPECT_EQ(set->gptq_damping(), 0.3);
  EXPECT_TRUE(set->gptq_damping_scores().empty());

  s.quantizer = "nearest";
  auto nearest = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", s, "");
  nearest->analyze({});
  EXPECT_EQ(nearest->gptq_damping(), 0.0);
}
