// A gptq (error-compensating) analysis with revisions on the embedded demo: a complete analysis from estimated
// global errors right after the candidates, then the cross-fitted measurement, whose errors equal an analysis
// without revisions bit for bit; the estimate is the nearest counterpart's LFH estimate times the out-of-fold
// output-error ratio of the compensation (checked against a float64 reference), ranks the options better than the
// plain LFH estimate of the compensated weights, and a cancelled analysis keeps the estimated revision usable with
// its pins.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>

#include "lorq/common/error.h"
#include "lorq/io/images.h"
#include "lorq/pipeline/compensated_estimate.h"
#include "lorq/common/rank_correlation.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/cross_fit.h"
#include "lorq/quant/gptq.h"
#include "lorq/session/api.h"

using namespace lorq;

namespace {

CompressSettings fast_gptq() {
  CompressSettings s;
  s.calibration.images = 16;
  s.lfh_images = 2;
  s.lfh.projections = 8;
  s.global_error.anchors = 2;
  s.global_error.calibrated = true;  // the default of lorq and the workbench
  s.candidates.quantizer = Quantizer::Gptq;
  return s;
}

bool uses_compensation(const LayerCandidates& c, const LayerOption& o) {
  if (o.kind == OptionKind::Quant) return c.weight_values.count(o.bits) > 0;
  return c.b_values.count(o.bits_b) > 0 || c.a_values.count({o.bits_a, o.bits_b}) > 0;
}

class GptqFirstAllocation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    api::init_engine();
    at::set_num_threads(1);  // one thread: the errors compared bit for bit do not depend on a thread split
    demo_ = new api::DemoPaths(api::find_demo());
    ASSERT_FALSE(demo_->model_dir.empty()) << "the embedded demo (datasets/) was not found";
    model_ = load_model(demo_->model_dir).release();
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    plain_ = new CompressionAnalysis(analyze_model(*model_, *set_, fast_gptq()));
    revisions_ = new std::vector<CompressionAnalysis>();
    progressive_ = new CompressionAnalysis(analyze_model(
        *model_, *set_, fast_gptq(), {}, nullptr, [](const CompressionAnalysis& a) { revisions_->push_back(a); }));
  }
  static void TearDownTestSuite() {
    delete progressive_;
    delete revisions_;
    delete plain_;
    delete set_;
    delete model_;
    delete demo_;
  }
  static api::DemoPaths* demo_;
  static Model* model_;
  static ImageSet* set_;
  static CompressionAnalysis *plain_, *progressive_;
  static std::vector<CompressionAnalysis>* revisions_;
};
api::DemoPaths* GptqFirstAllocation::demo_ = nullptr;
Model* GptqFirstAllocation::model_ = nullptr;
ImageSet* GptqFirstAllocation::set_ = nullptr;
CompressionAnalysis* GptqFirstAllocation::plain_ = nullptr;
CompressionAnalysis* GptqFirstAllocation::progressive_ = nullptr;
std::vector<CompressionAnalysis>* GptqFirstAllocation::revisions_ = nullptr;

void expect_same_candidates(const LayerCandidates& a, const LayerCandidates& b) {
  ASSERT_EQ(a.options.size(), b.options.size()) << a.layer;
  for (size_t j = 0; j < a.options.size(); ++j) EXPECT_EQ(a.options[j].label(), b.options[j].label()) << a.layer;
  ASSERT_EQ(a.weight_values.size(), b.weight_values.size()) << a.layer;
  for (const auto& [bits, v] : a.weight_values) EXPECT_TRUE(at::equal(v, b.weight_values.at(bits))) << a.layer;
  ASSERT_EQ(a.b_values.size(), b.b_values.size()) << a.layer;
  for (const auto& [bits, v] : a.b_values) EXPECT_TRUE(at::equal(v, b.b_values.at(bits))) << a.layer;
  ASSERT_EQ(a.a_values.size(), b.a_values.size()) << a.layer;
  for (const auto& [bits, v] : a.a_values) EXPECT_TRUE(at::equal(v, b.a_values.at(bits))) << a.layer;
}

}  // namespace

TEST_F(GptqFirstAllocation, TheFinalErrorsEqualAnAnalysisWithoutRevisionsExactly) {
  ASSERT_EQ(progressive_->layers.size(), plain_->layers.size());
  int compensated = 0;
  for (size_t i = 0; i < plain_->layers.size(); ++i) {
    const LayerCandidates &a = progressive_->layers[i], &b = plain_->layers[i];
    EXPECT_TRUE(a.errors_measured && b.errors_measured) << a.layer;
    expect_same_candidates(a, b);
    for (size_t j = 0; j < a.options.size() && j < b.options.size(); ++j) {
      EXPECT_EQ(a.options[j].error, b.options[j].error) << a.layer << " " << a.options[j].label();
      EXPECT_EQ(a.options[j].measured, b.options[j].measured) << a.layer << " " << a.options[j].label();
    }
    compensated += !a.weight_values.empty();
  }
  EXPECT_GT(compensated, 0);  // the comparison covers compensated options
  EXPECT_EQ(progressive_->layers_measured(), static_cast<int>(progressive_->layers.size()));
  bool estimate = false, measure = false;
  for (const auto& [stage, sec] : progressive_->stage_seconds) {
    estimate |= stage == "global error estimate";
    measure |= stage == "global error";
  }
  EXPECT_TRUE(estimate && measure);
}

// lorq --estimate on a gptq analysis: the first revision's estimate, not the plain LFH estimate of the fits.
TEST_F(GptqFirstAllocation, TheEstimateSettingGivesTheFirstRevisionsErrors) {
  ASSERT_FALSE(revisions_->empty());
  CompressSettings s = fast_gptq();
  s.global_error.estimate = true;
  const CompressionAnalysis e = analyze_model(*model_, *set_, s);
  const CompressionAnalysis& first = revisions_->front();
  ASSERT_EQ(e.layers.size(), first.layers.size());
  for (size_t i = 0; i < e.layers.size(); ++i) {
    const LayerCandidates &a = e.layers[i], &b = first.layers[i];
    expect_same_candidates(a, b);
    EXPECT_EQ(a.errors_measured, b.errors_measured) << a.layer;
    for (size_t j = 0; j < a.options.size() && j < b.options.size(); ++j)
      EXPECT_EQ(a.options[j].error, b.options[j].error) << a.layer << " " << a.options[j].label();
  }
  EXPECT_LT(e.layers_measured(), static_cast<int>(e.layers.size()));  // estimated, not measured
  bool measured_stage = false;
  for (const auto& [stage, sec] : e.stage_seconds) measured_stage |= stage == "global error";
  EXPECT_FALSE(measured_stage);
}

TEST_F(GptqFirstAllocation, OneCompleteEstimatedRevisionWithTheFinalCandidates) {
  // The estimate is the only revision analyze_model publishes; the final analysis is the one it returns.
  ASSERT_EQ(revisions_->size(), 1u);
  const CompressionAnalysis& first = revisions_->front();
  ASSERT_EQ(first.layers.size(), plain_->layers.size());
  int estimated = 0;
  for (size_t i = 0; i < first.layers.size(); ++i) {
    const LayerCandidates& l = first.layers[i];
    // Layers without a real LFH (the patch-embedding convolution) are measured at once, every other estimated.
    EXPECT_EQ(l.errors_measured, !l.low_rank_allowed) << l.layer;
    estimated += !l.errors_measured;
    for (const LayerOption& o : l.options)
      EXPECT_TRUE(std::isfinite(o.error) && o.error >= 0) << l.layer << " " << o.label() << " " << o.error;
    // Revisions differ only in their errors: the compensated values are the final (cross-fitted) ones already.
    expect_same_candidates(l, plain_->layers[i]);
    if (!l.low_rank_allowed) {  // measured at once, the same as the final measurement
      for (size_t j = 0; j < l.options.size(); ++j)
        EXPECT_EQ(l.options[j].error, plain_->layers[i].options[j].error) << l.layer;
    }
  }
  EXPECT_GT(estimated, 0);
  EXPECT_EQ(first.layers_measured(), static_cast<int>(first.layers.size()) - estimated);
  // Allocatable: the first allocation, fronts and budget curve exist.
  const LayerAllocator allocator(first);
  const int64_t budget = budget_bytes_for_avg_bits(4.0, first.compressible_params);
  EXPECT_LE(allocator.solve(budget).bytes, budget);
  EXPECT_FALSE(allocator.tradeoff_curve().empty());
}

TEST_F(GptqFirstAllocation, TheEstimateIsTheNearestLfhEstimateTimesTheOutOfFoldGain) {
  // A float64 reference of the estimate of every compensated Q anchor. The folds re-fitted on the final candidates
  // are the analysis' own (the fits depend on W, the grids and the fold moments only).
  const CompressSettings s = fast_gptq();
  const Calibration calib = calibrate(*model_, *set_, s.calibration);
  std::vector<LayerCandidates> layers = plain_->layers;
  const CrossFit fit = cross_fit_candidates(*model_, calib, layers, s.candidates.gptq);
  const CompressionAnalysis& first = revisions_->front();
  int checked = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerCandidates& l = first.layers[i];
    if (l.errors_measured) continue;
    const at::Tensor W = model_->weight(l.layer).to(at::kDouble);
    const at::Tensor J0 = fit.moments[0].at(l.layer).xtx, J1 = fit.moments[1].at(l.layer).xtx;
    for (const LayerOption& o : l.options) {
      if (o.kind != OptionKind::Quant || !uses_compensation(l, o)) continue;
      // The nearest quantizer's Q(b): its own LFH-weighted grid, not the grids GPTQ's rows chose.
      const RowQuantParams lfh_grid =
          search_row_ranges(W.to(at::kFloat), o.bits, RangeError::Hessian, plain_->lfh.at(l.layer).to(at::kFloat));
      const at::Tensor nearest = fake_quantize_rows(W.to(at::kFloat), lfh_grid).to(at::kDouble);
      const double lfh = estimated_nsr(W, nearest, plain_->lfh.at(l.layer), calib, task_of(*model_));
      const double out_of_fold = output_error(W, compressed_weight(fit.folds[0][i], o, W.to(at::kFloat)), J1) +
                                 output_error(W, compressed_weight(fit.folds[1][i], o, W.to(at::kFloat)), J0);
      const double expected = lfh * out_of_fold / output_error(W, nearest, J0 + J1);
      EXPECT_NEAR(o.error, expected, 1e-4 * expected) << l.layer << " " << o.label();
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

TEST_F(GptqFirstAllocation, TheEstimateRanksCompensatedOptionsBetterThanThePlainLfhEstimate) {
  // Per layer, the Spearman correlation of the estimates with the final (cross-fitted) measurement, over the
  // options the measurement measured; the plain LFH estimate of the same compensated weights for comparison.
  const Calibration calib = calibrate(*model_, *set_, fast_gptq().calibration);
  const CompressionAnalysis& first = revisions_->front();
  std::vector<double> corrected_rho, plain_rho;
  std::vector<double> all_corrected, all_plain, all_measured;
  for (size_t i = 0; i < first.layers.size(); ++i) {
    const LayerCandidates& l = plain_->layers[i];
    if (first.layers[i].errors_measured || l.weight_values.empty()) continue;
    const at::Tensor W = model_->weight(l.layer);
    std::vector<double> corrected, plain, measured;
    for (size_t j = 0; j < l.options.size(); ++j) {
      if (!l.options[j].measured) continue;
      corrected.push_back(first.layers[i].options[j].error);
      plain.push_back(
          estimated_nsr(W, compressed_weight(l, l.options[j], W), plain_->lfh.at(l.layer), calib, task_of(*model_)));
      measured.push_back(l.options[j].error);
    }
    if (measured.size() < 3) continue;
    corrected_rho.push_back(spearman(corrected, measured));
    plain_rho.push_back(spearman(plain, measured));
    all_corrected.insert(all_corrected.end(), corrected.begin(), corrected.end());
    all_plain.insert(all_plain.end(), plain.begin(), plain.end());
    all_measured.insert(all_measured.end(), measured.begin(), measured.end());
  }
  ASSERT_GE(corrected_rho.size(), 3u);
  double mean_corrected = 0, mean_plain = 0;
  for (size_t k = 0; k < corrected_rho.size(); ++k) {
    mean_corrected += corrected_rho[k] / double(corrected_rho.size());
    mean_plain += plain_rho[k] / double(plain_rho.size());
  }
  const double all_c = spearman(all_corrected, all_measured), all_p = spearman(all_plain, all_measured);
  std::printf(
      "Spearman with the measurement, compensated layers (%zu): within a layer mean %.3f corrected, %.3f "
      "plain LFH; over all %zu options %.3f corrected, %.3f plain LFH\n",
      corrected_rho.size(), mean_corrected, mean_plain, all_measured.size(), all_c, all_p);
  EXPECT_GT(mean_corrected, 0.8);
  EXPECT_GE(mean_corrected, mean_plain);
  EXPECT_GT(all_c, all_p);
}

// The workbench's path: the session publishes the estimated revision first and the final one last; cancelled after
// the first, the estimated analysis stays adoptable and allocates under a pin.
TEST(GptqSessionRevisions, CancelAfterTheEstimateKeepsACompleteEstimatedAnalysis) {
  api::init_engine();
  at::set_num_threads(1);
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty());
  api::AnalysisSettings settings = api::AnalysisSettings::fast();
  settings.quantizer = "gptq";
  auto s = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", settings, "");
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  std::vector<std::shared_ptr<const api::AnalysisRevision>> revisions;
  EXPECT_THROW(s->analyze(job,
                          [&](const std::shared_ptr<const api::AnalysisRevision>& r) {
                            revisions.push_back(r);
                            cancel = true;
                          }),
               Cancelled);
  ASSERT_EQ(revisions.size(), 1u);
  EXPECT_FALSE(revisions[0]->final());
  EXPECT_FALSE(s->analyzed());
  ASSERT_TRUE(s->adopt(revisions[0]));
  const api::GlobalErrorState errors = s->global_errors();
  EXPECT_EQ(errors.layers, static_cast<int>(s->layers().size()));
  EXPECT_LT(errors.measured_layers, errors.layers);
  for (const api::LayerAnalysis& l : s->layers()) {
    EXPECT_EQ(l.errors_measured, !l.low_rank_allowed) << l.name;
    for (const api::OptionRow& o : l.options) EXPECT_GE(o.error, 0.0) << l.name << " " << o.label;
  }
  Constraints pin;
  pin.layers["blocks.0.attn.qkv"].pinned_option = 0;
  const Allocation a = s->make_allocator(pin)->solve(s->budget_for_avg_bits(4.0));
  int pinned = 0;
  while (s->layers()[pinned].name != "blocks.0.attn.qkv") ++pinned;
  EXPECT_EQ(a.choice[pinned], 0);

  // Not cancelled: the estimate first, the final revision last, its errors all measured.
  revisions.clear();
  auto t = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", settings, "");
  t->analyze({}, [&](const std::shared_ptr<const api::AnalysisRevision>& r) { revisions.push_back(r); });
  ASSERT_EQ(revisions.size(), 2u);
  EXPECT_FALSE(revisions[0]->final());
  EXPECT_LT(revisions[0]->global_errors().measured_layers, revisions[0]->global_errors().layers);
  EXPECT_TRUE(revisions[1]->final());
  EXPECT_TRUE(revisions[1]->global_errors().measured());
  ASSERT_TRUE(t->adopt(revisions[0]));
  ASSERT_TRUE(t->adopt(revisions[1]));
  EXPECT_FALSE(t->adopt(revisions[0]));  // an older revision changes nothing
}
