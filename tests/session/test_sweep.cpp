// Accuracy against budget (lorq/session/sweep.h) on the embedded demo: the budget list, the measured points against
// direct evaluations, the cache (a second sweep measures nothing; other constraints or another evaluation set are
// another series), the session file round trip; the whole-analysis progress (lorq/common/stage_progress.h,
// lorq/session/analysis_progress.h); and the calibration image check (lorq/session/image_check.h).
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "lorq/common/error.h"
#include "lorq/common/stage_progress.h"
#include "lorq/session/analysis_progress.h"
#include "lorq/session/api.h"
#include "lorq/session/image_check.h"
#include "lorq/session/sweep.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

class SweepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    demo_ = api::find_demo();
    ASSERT_FALSE(demo_.model_dir.empty()) << "the embedded demo (datasets/) was not found";
    api::AnalysisSettings s = api::AnalysisSettings::fast();
    s.estimate = true;  // seconds on the demo
    session_ = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", s, "");
    session_->analyze({});
  }
  static void TearDownTestSuite() { session_.reset(); }
  static std::string temp(const std::string& name) {
    const std::string d = ::testing::TempDir() + "/lorq_sweep_" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }
  static api::SweepRequest request(std::vector<double> bits) {
    api::SweepRequest r;
    r.avg_bits = std::move(bits);
    r.eval_images = demo_.images_dir;
    r.limit = 48;
    return r;
  }
  static api::DemoPaths demo_;
  static std::shared_ptr<api::CompressionSession> session_;
};
api::DemoPaths SweepTest::demo_;
std::shared_ptr<api::CompressionSession> SweepTest::session_;

}  // namespace

TEST(SweepBudgets, ParsesRangesListsAndRejectsNonsense) {
  const std::vector<double> r = api::parse_avg_bits_list("2:8:0.5");
  ASSERT_EQ(r.size(), 13u);
  EXPECT_DOUBLE_EQ(r.front(), 2.0);
  EXPECT_DOUBLE_EQ(r.back(), 8.0);
  EXPECT_EQ(api::parse_avg_bits_list("2:3:0.1").size(), 11u);  // counted, not accumulated: 3 is included
  EXPECT_EQ(api::parse_avg_bits_list("3,4,6"), (std::vector<double>{3, 4, 6}));
  EXPECT_EQ(api::parse_avg_bits_list("4"), (std::vector<double>{4}));
  for (const char* bad : {"abc", "2:8", "2:8:0", "8:2:1", "2:8:-1", "3,,4", "0", "40", "0:100000:0.001", ""})
    EXPECT_THROW(api::parse_avg_bits_list(bad), Error) << bad;
  EXPECT_EQ(api::default_sweep_bits(1.3, 3.2), (std::vector<double>{1.3, 1.5, 2.0, 2.5, 3.0, 3.2}));
  EXPECT_EQ(api::default_sweep_bits(2.0, 3.0), (std::vector<double>{2.0, 2.5, 3.0}));
}

TEST_F(SweepTest, PointsAreTheEvaluationsOfTheirAllocations) {
  const auto allocator = session_->make_allocator(api::Constraints{});
  int reports = 0;
  JobControl job;
  job.progress = [&](const Progress& p) {
    EXPECT_EQ(p.stage, "sweep");
    EXPECT_LE(p.done, p.total);
    ++reports;
  };
  const api::SweepSeries s = api::run_sweep(*session_, {}, request({0.05, 3, 4, 31}), nullptr, job);
  EXPECT_GT(reports, 0);
  ASSERT_EQ(s.points.size(), 4u);
  EXPECT_EQ(s.images, 48);
  EXPECT_EQ(s.left_out, 16);
  ASSERT_EQ(s.float_metrics.size(), 2u);
  EXPECT_EQ(s.float_metrics[0].name, "top-1");
  EXPECT_DOUBLE_EQ(s.float_metrics[0].value, session_->evaluate_float(demo_.images_dir, "", 48, {}).top1_pct);
  // 0.05 bits lies below the smallest size and 31 bits above the largest useful one: both clamped.
  EXPECT_TRUE(s.points.front().clamped);
  EXPECT_EQ(s.points.front().budget_bytes, allocator->min_bytes());
  EXPECT_TRUE(s.points.back().clamped);
  EXPECT_EQ(s.points.back().budget_bytes, allocator->tradeoff_curve().back().bytes);
  for (const api::SweepPoint& p : s.points) {
    const api::Allocation a = allocator->solve(p.budget_bytes);
    EXPECT_EQ(p.bytes, a.bytes);
    EXPECT_LE(p.bytes, p.budget_bytes);
    EXPECT_DOUBLE_EQ(p.predicted_error, a.predicted_error);
    EXPECT_NEAR(p.avg_bits, 8.0 * p.budget_bytes / session_->compressible_params(), 1e-12);
    const api::EvalSummary e = session_->evaluate_compressed(a, demo_.images_dir, "", 48, {});
    ASSERT_EQ(p.metrics.size(), 2u);
    EXPECT_DOUBLE_EQ(p.metrics[0].value, e.top1_pct) << p.avg_bits;
    EXPECT_DOUBLE_EQ(p.metrics[1].value, e.top5_pct) << p.avg_bits;
    EXPECT_EQ(p.images, 48);
  }
  EXPECT_FALSE(s.points[1].clamped);
  EXPECT_DOUBLE_EQ(s.points[1].requested_bits, 3.0);
  EXPECT_LT(s.points[0].metrics[0].value, s.points[2].metrics[0].value);  // 0.3 bits breaks the model, 4 does not
}

TEST_F(SweepTest, CachedSeriesMeasureNothingAgainAndSurviveTheSessionFile) {
  const api::Constraints none;
  api::SweepCache cache;
  int partial = 0;
  cache.merge(
      api::run_sweep(*session_, none, request({3, 4}), nullptr, {}, [&](const api::SweepSeries&) { ++partial; }));
  EXPECT_EQ(partial, 3);  // the float model, then each point
  const std::string key = api::sweep_key(*session_, none, demo_.images_dir, "", 48);
  ASSERT_NE(cache.find(key), nullptr);

  // Saved in the session file and read back: the same results under the same key.
  const std::string dir = temp("file");
  api::SessionFile f;
  f.model_path = demo_.model_dir;
  f.images = demo_.images_dir;
  f.sweeps_json = cache.to_json();
  api::save_session_file(dir + "/s.lorq", f);
  const api::SweepCache reopened =
      api::SweepCache::from_json(api::load_session_file(dir + "/s.lorq").sweeps_json, dir + "/s.lorq");
  EXPECT_TRUE(reopened == cache);
  ASSERT_NE(reopened.find(key), nullptr);

  // A sweep over known and new budgets measures only the new one (and not the float model again).
  int evaluations = 0;
  std::string last_detail;
  JobControl job;
  job.progress = [&](const Progress& p) {
    if (p.detail != last_detail) ++evaluations;
    last_detail = p.detail;
  };
  const api::SweepSeries again = api::run_sweep(*session_, none, request({3, 4, 5}), reopened.find(key), job);
  EXPECT_EQ(evaluations, 1);
  ASSERT_EQ(again.points.size(), 3u);
  EXPECT_TRUE(again.points[0].cached);
  EXPECT_TRUE(again.points[1].cached);
  EXPECT_FALSE(again.points[2].cached);
  EXPECT_DOUBLE_EQ(again.points[0].metrics[0].value, cache.find(key)->points[0].metrics[0].value);
  // Everything known: no evaluation at all, and the caller still hears of the series once.
  evaluations = 0;
  partial = 0;
  api::run_sweep(*session_, none, request({3, 4}), reopened.find(key), job, [&](const api::SweepSeries& s) {
    ++partial;
    EXPECT_EQ(s.points.size(), 2u);
  });
  EXPECT_EQ(evaluations, 0);
  EXPECT_EQ(partial, 1);

  // Other constraints, another limit or another evaluation set are other series: stale points are never reused.
  api::Constraints pinned;
  pinned.layers["head"].excluded = api::Exclusion::Q8;
  EXPECT_NE(api::sweep_key(*session_, pinned, demo_.images_dir, "", 48), key);
  EXPECT_NE(api::sweep_key(*session_, none, demo_.images_dir, "", 64), key);
  EXPECT_NE(api::sweep_key(*session_, none, demo_.images_dir, demo_.labels_csv, 48), key);
  EXPECT_THROW(api::SweepCache::from_json("{\"version\": 1}", "bad.lorq"), Error);
}

TEST_F(SweepTest, CancelledSweepKeepsTheMeasuredPoints) {
  std::atomic<bool> cancel{false};
  api::SweepSeries kept;
  JobControl job;
  job.cancel = &cancel;
  EXPECT_THROW(api::run_sweep(*session_, {}, request({2, 3, 4}), nullptr, job,
                              [&](const api::SweepSeries& s) {
                                kept = s;
                                if (s.points.size() == 1) cancel = true;  // after the first point, whatever the speed
                              }),
               Cancelled);
  ASSERT_EQ(kept.points.size(), 1u);
  EXPECT_FALSE(kept.float_metrics.empty());
}

TEST(StagedProgress, WeighsStagesByCostAndSkipsCachedOnes) {
  StagedProgress p({{"a", 10}, {"b", 30}, {"c", 60}});
  EXPECT_LT(p.eta_seconds(), 0);
  EXPECT_FALSE(p.update({"eval", 1, 2, 1.0, ""}));  // not a stage of the plan
  EXPECT_TRUE(p.update({"a", 5, 10, 2.0, ""}));
  EXPECT_DOUBLE_EQ(p.fraction(), 0.05);
  // Half of a 10 s stage in 2 s: this run goes 2.5x faster than planned; a's rest at its own rate, b and c scaled.
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 2.0 + 90 * 0.4);
  // b never reports (loaded from a cache): it counts as done and took no time.
  p.update({"c", 30, 60, 12.0, ""});
  EXPECT_DOUBLE_EQ(p.fraction(), 0.7);
  // c half done in 12 s: the rest of c at c's own rate, nothing after it.
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 12.0);
  p.update({"c", 60, 60, 24.0, ""});
  EXPECT_DOUBLE_EQ(p.fraction(), 1.0);
  EXPECT_DOUBLE_EQ(p.eta_seconds(), 0.0);
}

TEST(StagedProgress, AnalysisPlanFollowsTheSettingsAndTheLastRun) {
  api::AnalysisSettings s;
  // GPTQ (the default): the moments, the damping's cross-validation, the candidates' sweeps and the cross-fit's fits
  // before the estimate pass.
  const auto gptq = api::analysis_stage_costs(s);
  ASSERT_EQ(gptq.size(), 8u);
  EXPECT_EQ(gptq[2].stage, "input moments");
  EXPECT_EQ(gptq[3].stage, "damping");
  EXPECT_EQ(gptq[5].stage, "cross-fit");
  EXPECT_EQ(gptq[6].stage, "global error estimate");
  // A damping given: nothing to cross-validate.
  api::AnalysisSettings damped = s;
  damped.gptq_damping = 0.01;
  ASSERT_EQ(api::analysis_stage_costs(damped).size(), 7u);
  EXPECT_EQ(api::analysis_stage_costs(damped)[3].stage, "candidates");
  s.quantizer = "nearest";
  const auto plan = api::analysis_stage_costs(s);
  // Measured errors: the progressive analysis' estimate pass comes first.
  ASSERT_EQ(plan.size(), 5u);
  EXPECT_EQ(plan[0].stage, "calibration");
  EXPECT_EQ(plan[3].stage, "global error estimate");
  EXPECT_EQ(plan[4].stage, "global error");
  EXPECT_GT(plan[4].seconds, 2 * plan[1].seconds);  // measured global errors dominate (88 of 126 s, calibrated)
  api::AnalysisSettings all = s;
  all.calibrated_errors = false;  // every anchor measured: 206 of 243 s
  EXPECT_GT(api::analysis_stage_costs(all)[4].seconds, 5 * plan[1].seconds);
  EXPECT_LT(plan[4].seconds, 0.5 * api::analysis_stage_costs(all)[4].seconds);
  s.estimate = true;
  ASSERT_EQ(api::analysis_stage_costs(s).size(), 4u);
  EXPECT_EQ(api::analysis_stage_costs(s)[3].stage, "global error");
  EXPECT_LT(api::analysis_stage_costs(s)[3].seconds, plan[1].seconds);
  // A last run's measured stages replace the estimates; the others scale like them.
  const auto measured = api::analysis_stage_costs(s, {{"calibration", 1.0}, {"sensitivity", 2.84}});
  EXPECT_DOUBLE_EQ(measured[0].seconds, 1.0);
  EXPECT_DOUBLE_EQ(measured[1].seconds, 2.84);
  EXPECT_NEAR(measured[2].seconds, 2.8 * 3.84 / 30.4, 1e-12);
}

TEST_F(SweepTest, CalibrationCheckNamesUndecodableFilesAndMatchesTheDraw) {
  // A folder of 10 demo images and two files that are not images inside.
  const std::string dir = temp("images");
  const auto files = api::list_image_set(demo_.images_dir, "").files;
  for (size_t i = 0; i < 10; ++i) fs::copy_file(files[i], dir + "/" + fs::path(files[i]).filename().string());
  std::ofstream(dir + "/broken-a.png") << "not a png";
  std::ofstream(dir + "/broken-b.jpg") << "not a jpeg";
  api::AnalysisSettings s = api::AnalysisSettings::fast();
  s.estimate = true;
  s.calibration_images = 16;  // more than the 10 usable ones
  s.lfh_images = 2;
  auto session = api::CompressionSession::open(demo_.model_dir, dir, "", s, "");
  const api::CalibrationCheck c = api::check_calibration_images(*session);
  EXPECT_FALSE(c.ok());
  EXPECT_EQ(c.available, 12);
  EXPECT_EQ(c.usable, 10);
  ASSERT_EQ(c.undecodable.size(), 2u);
  const std::string w = c.warning();
  EXPECT_NE(w.find("only 10 of the 16 requested calibration images are usable"), std::string::npos) << w;
  EXPECT_NE(w.find("broken-a.png"), std::string::npos) << w;
  EXPECT_NE(w.find("broken-b.jpg"), std::string::npos) << w;

  // With fewer asked than usable, the check reaches exactly the images the analysis then calibrates on.
  s.calibration_images = 6;
  auto fits = api::CompressionSession::open(demo_.model_dir, dir, "", s, "");
  const api::CalibrationCheck ok = api::check_calibration_images(*fits);
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.warning(), "");
  fits->analyze({});
  EXPECT_EQ(ok.files, fits->calibration_files());
  // Every undecodable file the draw met before its 6th usable one is named, and no file the analysis used is.
  for (const std::string& u : ok.undecodable)
    for (const std::string& f : fits->calibration_files()) EXPECT_EQ(u.find(f), std::string::npos);
}
