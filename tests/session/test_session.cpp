// The one core Session (lorq::api::CompressionSession) without any GUI: analysis, constraints with a layer group,
// allocation, final model, evaluation with the calibration images left out, export and reload, session files, and
// cancellation. And the proof that the CLI drives the same Session to the same allocation.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/session/api.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

api::AnalysisSettings fast() {
  api::AnalysisSettings s = api::AnalysisSettings::fast();
  s.estimate = true;  // the LFH estimate of the global errors: seconds on the demo
  return s;
}

class SessionTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    demo_ = api::find_demo();
    ASSERT_FALSE(demo_.model_dir.empty()) << "the embedded demo (datasets/) was not found";
    session_ = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", fast(), "");
    session_->analyze({});
  }
  static void TearDownTestSuite() { session_.reset(); }
  static std::string temp(const std::string& name) {
    const std::string d = ::testing::TempDir() + "/lorq_session_" + name;
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }
  // The demo's constraints with a layer group and a pin, as a user writes them.
  static std::string constraints_json() {
    return R"({"layers": {"head": {"exclude": "q8"}, "blocks.0.attn.qkv": {"pin": "Q6"}},
               "groups": [["blocks.1.mlp.fc1", "blocks.2.mlp.fc1", "blocks.3.mlp.fc1"]]})";
  }
  static api::DemoPaths demo_;
  static std::shared_ptr<api::CompressionSession> session_;
};
api::DemoPaths SessionTest::demo_;
std::shared_ptr<api::CompressionSession> SessionTest::session_;

int layer_index(const api::CompressionSession& s, const std::string& name) {
  for (size_t i = 0; i < s.layers().size(); ++i)
    if (s.layers()[i].name == name) return static_cast<int>(i);
  return -1;
}

}  // namespace

TEST_F(SessionTest, AnalysisDescribesEveryLayer) {
  ASSERT_TRUE(session_->analyzed());
  EXPECT_EQ(session_->model().task, TaskKind::Classification);
  EXPECT_EQ(session_->layers().size(), session_->model().layers.size());
  EXPECT_EQ(session_->calibration_files().size(), 16u);
  for (const auto& l : session_->layers()) {
    ASSERT_FALSE(l.options.empty()) << l.name;
    for (const auto& o : l.options) EXPECT_GE(o.error, 0) << l.name << " " << o.label;
  }
}

TEST_F(SessionTest, GroupAndPinAreHonouredByTheAllocation) {
  const api::Constraints c = session_->parse_constraints(constraints_json(), "test.json");
  ASSERT_EQ(c.groups.size(), 1u);
  const auto allocator = session_->make_allocator(c);
  const int64_t budget = session_->budget_for_avg_bits(4.0);
  const api::Allocation a = allocator->solve_checked(budget);
  EXPECT_LE(a.bytes, budget);
  const auto& layers = session_->layers();
  const std::string& group_label = layers[layer_index(*session_, "blocks.1.mlp.fc1")]
                                       .options.at(a.choice[layer_index(*session_, "blocks.1.mlp.fc1")])
                                       .label;
  for (const char* member : {"blocks.2.mlp.fc1", "blocks.3.mlp.fc1"}) {
    const int i = layer_index(*session_, member);
    EXPECT_EQ(layers[i].options.at(a.choice[i]).label, group_label) << member;
  }
  const int qkv = layer_index(*session_, "blocks.0.attn.qkv");
  EXPECT_EQ(layers[qkv].options.at(a.choice[qkv]).label, "Q6");
  const int head = layer_index(*session_, "head");
  EXPECT_EQ(layers[head].options.at(a.choice[head]).label, "Q8");
  // The JSON written back names the same constraints.
  EXPECT_EQ(session_->parse_constraints(session_->constraints_json(c), "again.json"), c);
  // A budget outside the achievable range is an error naming the limits; solve() clamps instead (the slider).
  EXPECT_THROW(allocator->solve_checked(allocator->min_bytes() - 1), Error);
  EXPECT_EQ(allocator->solve(allocator->min_bytes() - 1).bytes, allocator->solve(allocator->min_bytes()).bytes);
}

TEST_F(SessionTest, BadConstraintsNameTheSourceAndTheLayer) {
  try {
    session_->parse_constraints(R"({"layers": {"head": {"pin": "Q5"}}})", "mine.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mine.json: layer 'head' has no option 'Q5'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(session_->parse_constraints(R"({"groups": [["head", "nope"]]})", "g.json"), Error);
}

// Evaluations of compressed models report their fidelity to the float model's outputs on the same images, and only
// on the same images.
TEST_F(SessionTest, EvaluationsReportTheirFidelityToTheFloatOutputsOfTheSameImages) {
  const api::EvalSummary before = session_->evaluate_uniform(8, demo_.images_dir, "", 40, {});
  const api::EvalSummary f = session_->evaluate_float(demo_.images_dir, "", 40, {});
  EXPECT_FALSE(f.has_fidelity);  // the float model is the reference
  // A result computed before the float outputs existed has none either.
  EXPECT_FALSE(before.has_fidelity);
  const api::EvalSummary q8 = session_->evaluate_uniform(8, demo_.images_dir, "", 40, {});
  const api::EvalSummary q2 = session_->evaluate_uniform(2, demo_.images_dir, "", 40, {});
  ASSERT_TRUE(q8.has_fidelity);
  ASSERT_TRUE(q2.has_fidelity);
  // Q8 barely moves the outputs; Q2 moves them much further.
  EXPECT_GT(q8.agreement_pct, 90.0);
  EXPECT_GT(q8.output_nsr, 0.0);
  EXPECT_LT(q8.output_nsr, q2.output_nsr);
  EXPECT_LT(q8.kl, q2.kl);
  EXPECT_LE(q2.agreement_pct, q8.agreement_pct);
  // Other images (another limit) are not compared with these float outputs.
  EXPECT_FALSE(session_->evaluate_uniform(2, demo_.images_dir, "", 24, {}).has_fidelity);
  // The comparison view's figures are the evaluation's.
  const api::Allocation a = session_->make_allocator(api::Constraints{})->solve(session_->budget_for_avg_bits(3.0));
  session_->evaluate_float(demo_.images_dir, "", 40, {});
  const api::EvalSummary q = session_->evaluate_compressed(a, demo_.images_dir, "", 40, {});
  const api::ComparisonResult c = session_->compare(demo_.images_dir, "", 40, 5, a, {});
  ASSERT_TRUE(q.has_fidelity);
  ASSERT_TRUE(c.compressed_eval.has_fidelity);
  EXPECT_DOUBLE_EQ(c.compressed_eval.agreement_pct, q.agreement_pct);
  EXPECT_NEAR(c.compressed_eval.output_nsr, q.output_nsr, 1e-9);
  EXPECT_NEAR(c.compressed_eval.kl, q.kl, 1e-9);
}

TEST_F(SessionTest, EvaluationLeavesTheCalibrationImagesOutAndTheExportReloadsExactly) {
  const api::Allocation a = session_->make_allocator(api::Constraints{})->solve(session_->budget_for_avg_bits(4.0));
  session_->finalize(a, {}, {});
  const api::EvalSummary f = session_->evaluate_float(demo_.images_dir, "", 0, {});
  const api::EvalSummary q = session_->evaluate_compressed(a, demo_.images_dir, "", 0, {});
  EXPECT_EQ(f.left_out, 16);
  EXPECT_EQ(f.images, api::list_image_set(demo_.images_dir, "").images - 16);
  EXPECT_EQ(q.images, f.images);
  ASSERT_EQ(q.metrics.size(), 2u);
  EXPECT_EQ(q.metrics[0].name, "top-1");
  EXPECT_GT(q.top1_pct, 50.0);  // the demo model keeps most of its accuracy at 4 bits

  const std::string out = temp("export") + "/model";
  session_->export_to(out, a);
  EXPECT_TRUE(fs::exists(out + "/config.json"));
  // The export's config is the source's own file.
  EXPECT_EQ(read_text_file(out + "/config.json"), read_text_file(demo_.model_dir + "/config.json"));
  auto reloaded = api::ModelHandle::open(out);
  // The same images as the session's evaluation: every image the session did not calibrate on.
  const std::string held_out = temp("heldout");
  for (const auto& file : api::list_image_set(demo_.images_dir, "").files) {
    const auto& seen = session_->seen_images();
    if (std::find(seen.begin(), seen.end(), file) == seen.end())
      fs::copy_file(file, held_out + "/" + fs::path(file).filename().string());
  }
  {  // the demo's labels of the copied images only (a labels file listing missing images is an error)
    std::ifstream in(demo_.labels_csv);
    std::ofstream out(held_out + "/labels.csv");
    std::string line;
    std::getline(in, line);
    out << line << "\n";
    while (std::getline(in, line))
      if (fs::exists(held_out + "/" + line.substr(0, line.find(',')))) out << line << "\n";
  }
  const api::EvalSummary r = reloaded->evaluate(held_out, held_out + "/labels.csv", 0, {});
  EXPECT_EQ(r.labeled, q.labeled);
  EXPECT_DOUBLE_EQ(r.top1_pct, q.top1_pct);
  EXPECT_DOUBLE_EQ(r.top5_pct, q.top5_pct);
}

TEST_F(SessionTest, UniformBaselineUsesOneBitWidthEverywhere) {
  const api::Allocation u = session_->uniform_allocation(4);
  for (size_t i = 0; i < u.choice.size(); ++i)
    EXPECT_EQ(session_->layers()[i].options.at(u.choice[i]).label, "Q4") << session_->layers()[i].name;
}

TEST_F(SessionTest, SessionFilesKeepConstraintsAndGroups) {
  const std::string dir = temp("file");
  api::SessionFile f;
  f.model_path = demo_.model_dir;
  f.images = demo_.images_dir;
  f.settings = fast();
  f.settings.lfh_batch = 8;
  f.budget_bytes = 12345;
  f.constraints_json = session_->constraints_json(session_->parse_constraints(constraints_json(), "c.json"));
  api::save_session_file(dir + "/s.lorq", f);
  const api::SessionFile g = api::load_session_file(dir + "/s.lorq");
  EXPECT_EQ(g.settings.lfh_batch, 8);
  EXPECT_EQ(g.budget_bytes, 12345);
  EXPECT_EQ(session_->parse_constraints(g.constraints_json, "s.lorq"),
            session_->parse_constraints(constraints_json(), "c.json"));

  // A version-1 file (pins by option index) still opens, and its pin resolves to the same option.
  const int qkv = layer_index(*session_, "blocks.0.attn.qkv");
  std::ofstream(dir + "/old.lorq") << R"({"format": "lorq-session", "version": 1, "model": "m", "images": "i",
      "constraints": {"blocks.0.attn.qkv": {"pinned_option": 2, "min_bits": 0, "max_rank": -1, "excluded": "none"},
                      "head": {"pinned_option": -1, "min_bits": 0, "max_rank": -1, "excluded": "float"}}})";
  const api::Constraints old =
      session_->parse_constraints(api::load_session_file(dir + "/old.lorq").constraints_json, "old.lorq");
  EXPECT_EQ(old.layers.at("blocks.0.attn.qkv").pinned_option, 2);
  EXPECT_EQ(old.layers.at("head").excluded, api::Exclusion::Float);
  (void)qkv;
  // A newer version is refused with a message naming it.
  std::ofstream(dir + "/new.lorq") << R"({"format": "lorq-session", "version": 9, "model": "m"})";
  try {
    api::load_session_file(dir + "/new.lorq");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("version 9"), std::string::npos) << e.what();
  }
}

TEST_F(SessionTest, CancelledAnalysisLeavesTheSessionUnanalyzed) {
  auto s = api::CompressionSession::open(demo_.model_dir, demo_.images_dir, "", fast(), "");
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  job.progress = [&](const Progress&) { cancel = true; };  // cancel at the first report, whatever the speed
  EXPECT_THROW(s->analyze(job), Cancelled);
  EXPECT_FALSE(s->analyzed());
  EXPECT_THROW(s->make_allocator(api::Constraints{}), Error);
}

// The CLI is "parse arguments, drive the Session, print": with the same settings and constraints (a layer group
// included) it exports exactly the allocation the Session (the workbench's engine) solves.
TEST_F(SessionTest, CliAndSessionAllocateTheSame) {
  const std::string dir = temp("cli");
  std::ofstream(dir + "/c.json") << constraints_json();
  const std::string cmd = std::string(LORQ_CLI) + " compress --model " + demo_.model_dir + " --calib " +
                          demo_.images_dir + " --avg-bits 3.5 --images 16 --lfh-images 4 --projections 16" +
                          " --anchors 3 --estimate --constraints " + dir + "/c.json --out " + dir + "/out > " + dir +
                          "/log 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text_file(dir + "/log");
  const nlohmann::json exported = nlohmann::json::parse(read_text_file(dir + "/out/lorq-config.json"));
  const api::Allocation a = session_->make_allocator(session_->parse_constraints(constraints_json(), "c.json"))
                                ->solve_checked(session_->budget_for_avg_bits(3.5));
  const auto& layers = exported.at("layers");
  ASSERT_EQ(layers.size(), session_->layers().size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const api::LayerAnalysis& l = session_->layers()[i];
    ASSERT_EQ(layers[i].at("name"), l.name);
    ASSERT_NE(a.choice[i], api::kKeepFloat);
    const api::OptionRow& o = l.options.at(a.choice[i]);
    EXPECT_EQ(layers[i].at("bytes").get<int64_t>(), o.bytes) << l.name;
    EXPECT_EQ(layers[i].at("kind").get<std::string>(), o.kind == api::OptionKind::Quant ? "quant" : "low_rank")
        << l.name;
    EXPECT_EQ(layers[i].at("bits").get<int>(), o.bits) << l.name;
    EXPECT_EQ(layers[i].at("rank").get<int64_t>(), o.rank) << l.name;
    EXPECT_EQ(layers[i].at("bits_a").get<int>(), o.bits_a) << l.name;
  }
  EXPECT_EQ(exported.at("totals").at("bytes").get<int64_t>(), a.bytes);
}

// Cancelling adaptive rounding keeps the layers already learned (the workbench's Cancel), says how many, and the
// export records exactly those as learned.
TEST_F(SessionTest, CancelledRoundingKeepsTheLearnedLayers) {
  const api::Allocation a = session_->make_allocator(api::Constraints{})->solve(session_->budget_for_avg_bits(4.0));
  api::RoundingOptions o;
  o.iterations = 100;
  o.images = 16;
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  // Cancel as soon as the second block starts learning: "layers 6-9/26 blocks.1 ..." after the patch embedding
  // ("layer 1/26") and block 0 ("layers 2-5/26").
  int finished = -1;
  job.progress = [&](const Progress& p) {
    if (p.stage == "rounding" && p.detail.rfind("layers ", 0) == 0 &&
        p.detail.find(" blocks.1 ") != std::string::npos && finished < 0) {
      finished = std::stoi(p.detail.substr(7)) - 1;  // the layers before this block
      cancel = true;
    }
  };
  const api::RoundingSummary r = session_->round(a, o, job);
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.compressed_layers, static_cast<int>(session_->layers().size()));
  // The layers before block 1 finished; a segment whose learned rounding reconstructs worse keeps nearest, so at
  // least one block's worth and at most all of them are learned (the run is seeded: always the same number).
  ASSERT_GE(finished, 2);
  EXPECT_GE(r.learned_layers, 1);
  EXPECT_LE(r.learned_layers, finished);
  EXPECT_EQ(r.message(), std::to_string(r.learned_layers) + " of " + std::to_string(r.compressed_layers) +
                             " layers learned; the rest keep nearest rounding");
  EXPECT_TRUE(session_->rounded(a));
  const std::string out = temp("cancelled_rounding") + "/model";
  session_->export_to(out, a);
  const nlohmann::json cfg = nlohmann::json::parse(read_text_file(out + "/lorq-config.json"));
  int learned = 0;
  for (const auto& l : cfg.at("layers")) learned += l.value("rounding", "") == "learned";
  EXPECT_EQ(learned, r.learned_layers);
}
