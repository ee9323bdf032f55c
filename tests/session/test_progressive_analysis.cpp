// The progressive analysis on the demo: a complete analysis from the LFH-estimated global errors first, then the
// measured errors replacing the estimates layer by layer, each revision a complete, allocatable analysis; the
// final errors equal a measured-only analysis' exactly, the flags say which errors are which, cancelling the
// measurement keeps the partly measured analysis usable, and neither the cache nor a sweep key takes it for a
// measured one.
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/session/api.h"
#include "lorq/session/sweep.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

using Revision = std::shared_ptr<const api::AnalysisRevision>;

api::AnalysisSettings measured_settings() {
  api::AnalysisSettings s = api::AnalysisSettings::fast();
  s.estimate = false;  // the measured global errors: what the progressive analysis refines to
  // The per-layer refinement of nearest rounding; gptq's two revisions: test_gptq_first_allocation.
  s.quantizer = "nearest";
  return s;
}

std::string temp(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lorq_progressive_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Every layer has options, every option an error, and the allocator solves a 4-bit budget under a pin.
void expect_complete_and_allocatable(api::CompressionSession& s, const std::string& context) {
  ASSERT_EQ(s.layers().size(), s.model().layers.size()) << context;
  for (const api::LayerAnalysis& l : s.layers()) {
    ASSERT_FALSE(l.options.empty()) << context << " " << l.name;
    for (const api::OptionRow& o : l.options) EXPECT_GE(o.error, 0.0) << context << " " << l.name << " " << o.label;
  }
  Constraints pin;
  pin.layers["blocks.0.attn.qkv"].pinned_option = 0;
  const auto allocator = s.make_allocator(pin);
  const Allocation a = allocator->solve(s.budget_for_avg_bits(4.0));
  EXPECT_LE(a.bytes, s.budget_for_avg_bits(4.0)) << context;
  int pinned = 0;
  while (s.layers()[pinned].name != "blocks.0.attn.qkv") ++pinned;
  EXPECT_EQ(a.choice[pinned], 0) << context << ": the pin holds";
  EXPECT_FALSE(allocator->tradeoff_curve().empty()) << context;
}

class ProgressiveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // The engine's thread split (OpenBLAS on one thread): without it OpenBLAS's own threads make GEMM results, and
    // so the errors, vary from run to run in the last bits.
    // One intra-op thread: the demo is small, and on a loaded machine OpenMP's spinning threads only slow it.
    api::init_engine();
    at::set_num_threads(1);
    demo_ = api::find_demo();
    ASSERT_FALSE(demo_.model_dir.empty()) << "the embedded demo (datasets/) was not found";
    // The reference: one pass, every error measured.
    measured_ = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", measured_settings(), "");
    measured_->analyze({});
    // The progressive analysis of the same settings (same seed), every revision kept.
    progressive_ = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", measured_settings(), "");
    progressive_->analyze({}, [](const Revision& r) { revisions_.push_back(r); });
  }
  static void TearDownTestSuite() {
    revisions_.clear();
    measured_.reset();
    progressive_.reset();
  }
  // Layers the first revision already measured: those without a real LFH.
  static int unestimated() {
    int m = 0;
    for (const api::LayerAnalysis& l : measured_->layers()) m += !l.low_rank_allowed;
    return m;
  }
  static api::DemoPaths demo_;
  static std::shared_ptr<api::CompressionSession> measured_, progressive_;
  static std::vector<Revision> revisions_;
};
api::DemoPaths ProgressiveTest::demo_;
std::shared_ptr<api::CompressionSession> ProgressiveTest::measured_, ProgressiveTest::progressive_;
std::vector<Revision> ProgressiveTest::revisions_;

TEST_F(ProgressiveTest, TheSessionChangesOnlyWhenARevisionIsAdopted) {
  ASSERT_GE(revisions_.size(), 2u);
  EXPECT_FALSE(progressive_->analyzed());
  EXPECT_EQ(progressive_->global_errors().layers, 0);
  EXPECT_EQ(progressive_->global_errors().text(), "");
}

TEST_F(ProgressiveTest, TheFirstRevisionIsACompleteEstimatedAnalysis) {
  const Revision& first = revisions_.front();
  const size_t n = measured_->layers().size();
  EXPECT_FALSE(first->final());
  // Layers without a real LFH (the patch-embedding convolution) are measured at once; every other is estimated.
  for (const api::LayerAnalysis& l : first->layers()) EXPECT_EQ(l.errors_measured, !l.low_rank_allowed) << l.name;
  EXPECT_EQ(first->global_errors().measured_layers, unestimated());
  EXPECT_EQ(first->global_errors().layers, static_cast<int>(n));
  // The estimates are those of the estimate-only analysis, bit for bit.
  api::AnalysisSettings est = measured_settings();
  est.estimate = true;
  auto estimated = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", est, "");
  estimated->analyze({});
  ASSERT_EQ(estimated->layers().size(), n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(first->layers()[i].options.size(), estimated->layers()[i].options.size());
    for (size_t k = 0; k < first->layers()[i].options.size(); ++k)
      EXPECT_EQ(first->layers()[i].options[k].error, estimated->layers()[i].options[k].error);
  }
  EXPECT_EQ(estimated->global_errors(), first->global_errors());
  ASSERT_TRUE(progressive_->adopt(first));
  EXPECT_TRUE(progressive_->analyzed());
  expect_complete_and_allocatable(*progressive_, "estimated");
}

TEST_F(ProgressiveTest, EachLaterRevisionMeasuresOneMoreLayerInNetworkOrder) {
  const int n = static_cast<int>(measured_->layers().size()), m0 = unestimated();
  // The estimate, then one revision per measured layer but the last, then the final.
  ASSERT_EQ(static_cast<int>(revisions_.size()), n - m0 + 1);
  std::vector<int> estimated_layers;  // in network order
  for (int i = 0; i < n; ++i)
    if (measured_->layers()[i].low_rank_allowed) estimated_layers.push_back(i);
  for (int r = 0; r <= n - m0; ++r) {
    const api::GlobalErrorState e = revisions_[r]->global_errors();
    EXPECT_EQ(e.measured_layers, m0 + r);
    EXPECT_EQ(revisions_[r]->final(), r == n - m0);
    for (int k = 0; k < static_cast<int>(estimated_layers.size()); ++k)
      EXPECT_EQ(revisions_[r]->layers()[estimated_layers[k]].errors_measured, k < r) << r << " " << k;
    if (e.measured_layers > 0 && e.measured_layers < n) {
      EXPECT_EQ(e.text(), "measured " + std::to_string(e.measured_layers) + " of " + std::to_string(n) + " layers");
    }
    if (r > 0) {
      EXPECT_GE(revisions_[r]->seconds(), revisions_[r - 1]->seconds());
    }
  }
  // Every revision is allocatable under the same constraints; the adopted one moves forward only.
  for (int r = 1; r < n - m0; r += 7) {
    ASSERT_TRUE(progressive_->adopt(revisions_[r]));
    expect_complete_and_allocatable(*progressive_, "revision " + std::to_string(r));
    EXPECT_FALSE(progressive_->adopt(revisions_[r - 1])) << "an older revision is not adopted";
    EXPECT_EQ(progressive_->global_errors().measured_layers, m0 + r);
  }
}

TEST_F(ProgressiveTest, TheFinalErrorsEqualTheMeasuredOnlyAnalysisExactly) {
  ASSERT_TRUE(progressive_->adopt(revisions_.back()));
  EXPECT_TRUE(progressive_->global_errors().measured());
  EXPECT_EQ(progressive_->global_errors().text(), "measured");
  EXPECT_EQ(measured_->global_errors().text(), "measured");
  const auto& a = progressive_->layers();
  const auto& b = measured_->layers();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(a[i].errors_measured && b[i].errors_measured) << a[i].name;
    ASSERT_EQ(a[i].options.size(), b[i].options.size()) << a[i].name;
    for (size_t k = 0; k < a[i].options.size(); ++k) {
      EXPECT_EQ(a[i].options[k].label, b[i].options[k].label);
      EXPECT_EQ(a[i].options[k].error, b[i].options[k].error) << a[i].name << " " << a[i].options[k].label;
      EXPECT_EQ(a[i].options[k].measured, b[i].options[k].measured);
    }
  }
  const int64_t budget = measured_->budget_for_avg_bits(4.0);
  EXPECT_EQ(progressive_->make_allocator(Constraints{})->solve(budget).choice,
            measured_->make_allocator(Constraints{})->solve(budget).choice);
  // The stage times say what ran: the estimate pass, then the measurement.
  bool estimate = false, measure = false;
  for (const auto& [stage, sec] : progressive_->stage_seconds()) {
    estimate |= stage == "global error estimate";
    measure |= stage == "global error";
  }
  EXPECT_TRUE(estimate && measure);
}

TEST_F(ProgressiveTest, CancelledRefinementKeepsAPartlyMeasuredAnalysisThatIsNotCachedAsMeasured) {
  const std::string cache = temp("cache");
  auto s = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", measured_settings(), cache);
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  Revision last;
  // Cancel once three layers are measured: the job stops before the next layer.
  const int cancel_at = unestimated() + 3;
  EXPECT_THROW(s->analyze(job,
                          [&](const Revision& r) {
                            last = r;
                            if (r->global_errors().measured_layers == cancel_at) cancel = true;
                          }),
               Cancelled);
  ASSERT_TRUE(last);
  EXPECT_FALSE(s->analyzed());
  ASSERT_TRUE(s->adopt(last));
  EXPECT_EQ(s->global_errors().measured_layers, cancel_at);
  EXPECT_EQ(s->global_errors().text(),
            "measured " + std::to_string(cancel_at) + " of " + std::to_string(measured_->layers().size()) + " layers");
  expect_complete_and_allocatable(*s, "cancelled");
  EXPECT_FALSE(s->has_cached_analysis()) << "a partly measured analysis must not be cached";
  // A sweep of this analysis is not the measured analysis' series.
  EXPECT_NE(api::sweep_key(*s, {}, demo_.images_dir, "", 0), api::sweep_key(*measured_, {}, demo_.images_dir, "", 0));
  // The session file says so.
  api::SessionFile f;
  f.model_path = demo_.model_dir;
  f.global_errors = s->global_errors();
  const std::string file = temp("file") + "/s.lorq";
  api::save_session_file(file, f);
  EXPECT_EQ(api::load_session_file(file).global_errors, s->global_errors());

  // Analysed again, the cached stages load and the measurement completes; the cache then holds it, measured.
  std::vector<Revision> again;
  s->analyze({}, [&](const Revision& r) { again.push_back(r); });
  ASSERT_FALSE(again.empty());
  EXPECT_EQ(again.front()->global_errors().measured_layers, unestimated());
  ASSERT_TRUE(s->adopt(again.back()));
  EXPECT_TRUE(s->global_errors().measured());
  EXPECT_TRUE(s->has_cached_analysis());
  auto reopened = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", measured_settings(), cache);
  std::vector<Revision> cached;
  reopened->analyze({}, [&](const Revision& r) { cached.push_back(r); });
  ASSERT_EQ(cached.size(), 1u) << "a cached analysis is one final revision";
  EXPECT_TRUE(cached[0]->final());
  reopened->adopt(cached[0]);
  EXPECT_TRUE(reopened->global_errors().measured());
  for (size_t i = 0; i < reopened->layers().size(); ++i) {
    EXPECT_TRUE(reopened->layers()[i].errors_measured);
    for (size_t k = 0; k < reopened->layers()[i].options.size(); ++k)
      EXPECT_EQ(reopened->layers()[i].options[k].error, measured_->layers()[i].options[k].error);
  }
}

TEST(GlobalErrorState, SaysWhichErrorsAreWhich) {
  EXPECT_EQ((api::GlobalErrorState{0, 0}.text()), "");
  EXPECT_EQ((api::GlobalErrorState{0, 26}.text()), "estimated (LFH)");
  EXPECT_EQ((api::GlobalErrorState{12, 26}.text()), "measured 12 of 26 layers");
  EXPECT_EQ((api::GlobalErrorState{26, 26}.text()), "measured");
  EXPECT_FALSE((api::GlobalErrorState{12, 26}.measured()));
  EXPECT_TRUE((api::GlobalErrorState{26, 26}.measured()));
}

TEST(AdoptRevision, ARevisionOfAnotherSessionIsRefused) {
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty());
  api::AnalysisSettings est = measured_settings();
  est.estimate = true;
  auto a = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", est, "");
  auto b = api::CompressionSession::open(demo.model_dir, demo.images_dir, "", est, "");
  Revision r;
  a->analyze({}, [&](const Revision& x) { r = x; });
  ASSERT_TRUE(r && r->final());
  EXPECT_THROW(b->adopt(r), Error);
  EXPECT_FALSE(b->analyzed());
  EXPECT_TRUE(a->adopt(r));
  EXPECT_FALSE(a->adopt(r)) << "the same revision twice changes nothing";
}

}  // namespace
