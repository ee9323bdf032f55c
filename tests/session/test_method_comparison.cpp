// The method comparison (lorq/session/method_comparison.h) on the embedded demo with small settings (8 calibration
// images, LFH-estimated errors, 20 rounding steps, 5 LRA-QViT steps): every row at or under the budget, rows
// delivered as they finish, the uniform row against a direct evaluation by another session, each method's per-layer
// result summing to its bytes, the placeholder row of the LRA-QViT building blocks, cancel keeping the finished
// rows, and the JSON and session-file round trips.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include "lorq/common/error.h"
#include "lorq/session/api.h"
#include "lorq/session/lraqvit_blocks_row.h"
#include "lorq/session/method_comparison.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

class MethodComparisonTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    demo_ = api::find_demo();
    ASSERT_FALSE(demo_.model_dir.empty()) << "the embedded demo (datasets/) was not found";
    cache_ = ::testing::TempDir() + "/lorq_methods_cache";
    fs::remove_all(cache_);
    seen_ = new std::vector<api::MethodComparison>;
    result_ = new api::MethodComparison(
        api::run_method_comparison(settings(), {}, [](const api::MethodComparison& c) { seen_->push_back(c); }));
  }
  static void TearDownTestSuite() {
    delete result_;
    delete seen_;
  }
  static api::MethodComparisonSettings settings() {
    api::MethodComparisonSettings s;
    s.model_path = demo_.model_dir;
    s.calib_images = demo_.images_dir;
    s.eval_images = demo_.images_dir;
    s.cache_dir = cache_;
    s.analysis = api::AnalysisSettings::fast();
    s.analysis.calibration_images = 8;
    s.analysis.lfh_images = 4;
    s.analysis.estimate = true;
    s.limit = 64;
    s.avg_bits = 3;
    s.round_iterations = 20;
    s.lraqvit_steps = 5;
    s.lraqvit_wads_steps = 5;
    return s;
  }
  static api::DemoPaths demo_;
  static std::string cache_;
  static api::MethodComparison* result_;
  static std::vector<api::MethodComparison>* seen_;
};
api::DemoPaths MethodComparisonTest::demo_;
std::string MethodComparisonTest::cache_;
api::MethodComparison* MethodComparisonTest::result_ = nullptr;
std::vector<api::MethodComparison>* MethodComparisonTest::seen_ = nullptr;

int64_t layer_bytes(const api::MethodRow& r) {
  int64_t sum = 0;
  for (const auto& l : r.layers) sum += l.option.bytes;
  return sum;
}

}  // namespace

TEST_F(MethodComparisonTest, EveryMethodAtTheBudgetRowsDeliveredAsTheyFinish) {
  const api::MethodComparison& c = *result_;
  ASSERT_TRUE(c.complete);
  EXPECT_EQ(c.budget_bytes, api::budget_bytes_for_avg_bits(3, c.compressible_params));
  EXPECT_NEAR(c.budget_avg_bits(), 3.0, 1e-3);
  ASSERT_FALSE(c.float_metrics.empty());
  EXPECT_EQ(c.float_metrics[0].name, "top-1");
  ASSERT_EQ(c.rows.size(), api::all_methods().size());
  for (size_t i = 0; i < c.rows.size(); ++i) EXPECT_EQ(c.rows[i].kind, api::all_methods()[i]);
  // After the float evaluation, then after each method, with one more row each time.
  ASSERT_EQ(seen_->size(), c.rows.size() + 1);
  for (size_t i = 0; i < seen_->size(); ++i) {
    EXPECT_EQ((*seen_)[i].rows.size(), i);
    EXPECT_FALSE((*seen_)[i].complete);
  }
  for (const api::MethodRow& r : c.rows) {
    if (r.kind == api::MethodKind::MlorqLraQvitBlocks) continue;
    ASSERT_TRUE(r.ran) << r.method << ": " << r.note;
    EXPECT_LE(r.bytes, c.budget_bytes) << r.method;
    EXPECT_DOUBLE_EQ(r.avg_bits, 8.0 * r.bytes / c.compressible_params);
    ASSERT_EQ(r.metrics.size(), c.float_metrics.size());
    EXPECT_EQ(r.images, 64);
    EXPECT_GT(r.seconds, 0) << r.method;
  }
  EXPECT_EQ(c.rows[0].method, "uniform Q3 per row");
  EXPECT_EQ(c.rows[3].method, "LRA-QViT W4");  // its fixed ranks need 4 bits to fit under 3 average bits
  EXPECT_GT(c.rows[3].seconds, 0);
}

TEST_F(MethodComparisonTest, PerLayerResultsAddUpToEachMethodsBytes) {
  const api::MethodComparison& c = *result_;
  auto session = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", settings().analysis, cache_);
  session->analyze({});
  const auto& layers = session->model().layers;
  for (size_t m = 0; m < 3; ++m) {  // uniform and both MLoRQ rows: every analysed layer, in network order
    const api::MethodRow& r = c.rows[m];
    ASSERT_EQ(r.layers.size(), layers.size()) << r.method;
    for (size_t i = 0; i < layers.size(); ++i) EXPECT_EQ(r.layers[i].layer, layers[i].name);
    EXPECT_EQ(layer_bytes(r), r.bytes) << r.method;
  }
  for (const auto& l : c.rows[0].layers) {
    EXPECT_EQ(l.option.kind, api::OptionKind::Quant);
    EXPECT_EQ(l.option.bits, 3);
  }
  // Adaptive rounding changes codes, never the allocation.
  for (size_t i = 0; i < layers.size(); ++i)
    EXPECT_EQ(c.rows[1].layers[i].option.label, c.rows[2].layers[i].option.label);
  // LRA-QViT: qkv, fc1 and fc2 factorized at r = k/2 with 4-bit factors, every other linear layer quantized.
  const api::MethodRow& lra = c.rows[3];
  EXPECT_EQ(layer_bytes(lra), lra.bytes);
  int low_rank = 0;
  for (const auto& l : lra.layers) {
    const std::string kind = l.layer.substr(l.layer.rfind('.') + 1);
    const bool factorized = kind == "qkv" || kind == "fc1" || kind == "fc2";
    EXPECT_EQ(l.option.kind == api::OptionKind::LowRank, factorized) << l.layer;
    if (factorized) {
      ++low_rank;
      EXPECT_EQ(l.option.bits_a, 4);
      const int i = [&] {
        for (size_t k = 0; k < layers.size(); ++k)
          if (layers[k].name == l.layer) return static_cast<int>(k);
        return -1;
      }();
      ASSERT_GE(i, 0) << l.layer;
      EXPECT_EQ(l.option.rank, std::min(layers[i].out_features, layers[i].in_features) / 2);
    } else {
      EXPECT_EQ(l.option.bits, 4) << l.layer;
    }
  }
  EXPECT_GT(low_rank, 0);
}

TEST_F(MethodComparisonTest, UniformRowMatchesADirectEvaluation) {
  // Another session, the same allocation: Q3 per row everywhere, evaluated without the calibration images.
  auto session = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", settings().analysis, cache_);
  session->analyze({});
  const api::EvalSummary e = session->evaluate_uniform(3, demo_.images_dir, "", 64, {});
  const api::MethodRow& r = result_->rows[0];
  EXPECT_EQ(r.images, e.images);
  ASSERT_EQ(r.metrics.size(), e.metrics.size());
  for (size_t i = 0; i < e.metrics.size(); ++i) EXPECT_DOUBLE_EQ(r.metrics[i].value, e.metrics[i].value);
  EXPECT_EQ(r.bytes, session->uniform_allocation(3).bytes);
  const api::EvalSummary f = session->evaluate_float(demo_.images_dir, "", 64, {});
  for (size_t i = 0; i < f.metrics.size(); ++i) EXPECT_DOUBLE_EQ(result_->float_metrics[i].value, f.metrics[i].value);
}

TEST_F(MethodComparisonTest, BuildingBlocksRowIsMlorqsAllocationWithTheBlocks) {
  // The same allocation as MLoRQ (nearest), finalized with the blocks that apply to weights only: the recovery.
  const api::MethodRow& nearest = result_->rows[1];
  const api::MethodRow& r = result_->rows[4];
  EXPECT_EQ(r.kind, api::MethodKind::MlorqLraQvitBlocks);
  ASSERT_TRUE(r.ran) << r.note;
  EXPECT_EQ(r.bytes, nearest.bytes);
  ASSERT_EQ(r.layers.size(), nearest.layers.size());
  for (size_t i = 0; i < r.layers.size(); ++i) EXPECT_EQ(r.layers[i].option.label, nearest.layers[i].option.label);
  EXPECT_NE(r.note.find("recovery " + std::to_string(api::kLraQvitBlocksRecoverySteps) + " steps"), std::string::npos)
      << r.note;
  EXPECT_EQ(r.note.find("per-token"), std::string::npos) << r.note;  // weights only: no activations to quantize
  ASSERT_FALSE(r.metrics.empty());
  EXPECT_GT(r.images, 0);
}

TEST_F(MethodComparisonTest, TableIsTheCommandLinesTable) {
  const std::string t = result_->table_text();
  EXPECT_EQ(t.rfind("budget ", 0), 0u) << t;
  EXPECT_NE(t.find("(3.000 average bits over"), std::string::npos) << t;
  EXPECT_NE(t.find("\nfloat "), std::string::npos) << t;
  for (const api::MethodRow& r : result_->rows) EXPECT_NE(t.find("\n" + r.method + " "), std::string::npos) << t;
  EXPECT_NE(t.find("recovery"), std::string::npos) << t;  // the blocks row says what it switched on
}

TEST_F(MethodComparisonTest, JsonRoundTripKeepsEverything) {
  const std::string text = result_->to_json();
  ASSERT_FALSE(text.empty());
  const api::MethodComparison back = api::MethodComparison::from_json(text, "x.lorq");
  EXPECT_EQ(back.to_json(), text);
  ASSERT_EQ(back.rows.size(), result_->rows.size());
  for (size_t i = 0; i < back.rows.size(); ++i) {
    const api::MethodRow &a = result_->rows[i], &b = back.rows[i];
    EXPECT_EQ(a.kind, b.kind);
    EXPECT_EQ(a.method, b.method);
    EXPECT_EQ(a.bytes, b.bytes);
    EXPECT_EQ(a.note, b.note);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t k = 0; k < a.layers.size(); ++k) {
      EXPECT_EQ(a.layers[k].option.kind, b.layers[k].option.kind);
      EXPECT_EQ(a.layers[k].option.bits, b.layers[k].option.bits);
      EXPECT_EQ(a.layers[k].option.rank, b.layers[k].option.rank);
      EXPECT_EQ(a.layers[k].option.bytes, b.layers[k].option.bytes);
    }
  }
  EXPECT_EQ(back.table_text(), result_->table_text());
  EXPECT_TRUE(api::MethodComparison::from_json("", "x.lorq").empty());
  EXPECT_EQ(api::MethodComparison().to_json(), "");
  // Malformed input names the file.
  for (const std::string bad : {"[1,2]", "{\"rows\": 3}", "{not json",
                                "{\"budget_bytes\": 1, \"compressible_params\": 2, "
                                "\"rows\": [{\"kind\": \"magic\", \"method\": \"m\"}]}"}) {
    try {
      api::MethodComparison::from_json(bad, "s.lorq");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("s.lorq"), std::string::npos) << e.what();
    }
  }
}

TEST_F(MethodComparisonTest, SessionFileKeepsTheComparison) {
  const std::string dir = ::testing::TempDir() + "/lorq_methods_session";
  fs::remove_all(dir);
  fs::create_directories(dir);
  api::SessionFile f;
  f.model_path = demo_.model_dir;
  f.images = demo_.images_dir;
  f.methods_json = result_->to_json();
  api::save_session_file(dir + "/s.lorq", f);
  const api::SessionFile back = api::load_session_file(dir + "/s.lorq");
  EXPECT_EQ(api::MethodComparison::from_json(back.methods_json, "s.lorq").to_json(), result_->to_json());
  f.methods_json.clear();
  api::save_session_file(dir + "/none.lorq", f);
  EXPECT_TRUE(api::load_session_file(dir + "/none.lorq").methods_json.empty());
}

TEST_F(MethodComparisonTest, CancelKeepsTheFinishedRows) {
  // The flag goes up as the first method's row arrives (on the comparison's own thread), so the second method is
  // never started.
  api::MethodComparisonSettings s = settings();
  s.methods = {api::MethodKind::Uniform, api::MethodKind::MlorqNearest};
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  api::MethodComparison last;
  EXPECT_THROW(api::run_method_comparison(s, job,
                                          [&](const api::MethodComparison& c) {
                                            last = c;
                                            if (c.rows.size() == 1) cancel = true;
                                          }),
               Cancelled);
  ASSERT_EQ(last.rows.size(), 1u);
  EXPECT_EQ(last.rows[0].kind, api::MethodKind::Uniform);
  EXPECT_FALSE(last.complete);
}

TEST_F(MethodComparisonTest, ChosenMethodsOnlyAndBadSettingsRejected) {
  api::MethodComparisonSettings s = settings();
  s.methods = {api::MethodKind::MlorqLraQvitBlocks, api::MethodKind::Uniform};
  const api::MethodComparison c = api::run_method_comparison(s, {});
  ASSERT_EQ(c.rows.size(), 2u);
  EXPECT_EQ(c.rows[0].kind, api::MethodKind::MlorqLraQvitBlocks);
  EXPECT_EQ(c.rows[1].kind, api::MethodKind::Uniform);
  s.act_bits = 5;
  EXPECT_THROW(api::run_method_comparison(s, {}), Error);
  s.act_bits = 0;
  s.avg_bits = 0;
  EXPECT_THROW(api::run_method_comparison(s, {}), Error);
  // A budget below every method's smallest model: the rows say so rather than fail.
  s.budget_bytes = 1;
  s.methods = {api::MethodKind::Uniform, api::MethodKind::MlorqNearest, api::MethodKind::LraQvit};
  const api::MethodComparison low = api::run_method_comparison(s, {});
  for (const api::MethodRow& r : low.rows) {
    EXPECT_FALSE(r.ran) << r.method;
    EXPECT_FALSE(r.note.empty()) << r.method;
  }
  EXPECT_EQ(api::parse_method_kind("lraqvit"), api::MethodKind::LraQvit);
  EXPECT_THROW(api::parse_method_kind("gptq"), Error);
}

TEST_F(MethodComparisonTest, MlorqRowsFollowTheConstraints) {
  api::MethodComparisonSettings s = settings();
  s.methods = {api::MethodKind::MlorqNearest};
  s.mlorq_constraints_json = R"({"layers": {"head": {"pin": "Q8"}}})";
  const api::MethodComparison c = api::run_method_comparison(s, {});
  ASSERT_EQ(c.rows.size(), 1u);
  ASSERT_TRUE(c.rows[0].ran) << c.rows[0].note;
  EXPECT_NE(c.rows[0].note.find("constraints"), std::string::npos);
  bool found = false;
  for (const auto& l : c.rows[0].layers)
    if (l.layer == "head") {
      found = true;
      EXPECT_EQ(l.option.label, "Q8");
    }
  EXPECT_TRUE(found);
  s.mlorq_constraints_json = R"({"layers": {"head": {"pin": "Q5"}}})";
  s.mlorq_constraints_source = "c.json";
  try {
    api::run_method_comparison(s, {});
    ADD_FAILURE() << "accepted a pin to a missing option";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.json"), std::string::npos) << e.what();
  }
}
