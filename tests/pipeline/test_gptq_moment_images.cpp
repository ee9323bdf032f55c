// GPTQ moments from more images than the calibration ones (CandidateSettings::gptq_images), on the embedded demo:
// which images are added, that their moments add exactly, that the compensation is fitted through the sum, that
// the session cache keys and keeps them, that the session leaves them out of evaluation, and that the sensitivity
// is shared by analyses that differ only after it.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "lorq/io/images.h"
#include "lorq/io/tensor_io.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/session/api.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

constexpr int kCalibration = 12, kMomentImages = 31;  // 19 more, an odd count: the last moment batch is short

CompressSettings settings(int gptq_images) {
  CompressSettings s;
  s.calibration.images = kCalibration;
  s.calibration.batch = 8;
  s.lfh_images = 2;
  s.lfh.projections = 8;
  s.global_error.anchors = 2;
  s.candidates.quantizer = Quantizer::Gptq;
  s.candidates.gptq_images = gptq_images;
  return s;
}

at::Tensor load(const std::vector<std::string>& files, const Model& model) {
  ImageSet s;
  for (const auto& f : files) s.items.push_back({f, -1});
  return load_batch(s, 0, s.size(), model.preprocessing(), 2).images;
}

class MomentImages : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    init_threads();
    demo_ = new api::DemoPaths(api::find_demo());
    ASSERT_FALSE(demo_->model_dir.empty());
    model_ = load_model(demo_->model_dir).release();
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    analysis_ = new CompressionAnalysis(analyze_model(*model_, *set_, settings(kMomentImages)));
  }
  static void TearDownTestSuite() {
    delete analysis_;
    delete set_;
    delete model_;
    delete demo_;
  }
  static api::DemoPaths* demo_;
  static Model* model_;
  static ImageSet* set_;
  static CompressionAnalysis* analysis_;
};
api::DemoPaths* MomentImages::demo_ = nullptr;
Model* MomentImages::model_ = nullptr;
ImageSet* MomentImages::set_ = nullptr;
CompressionAnalysis* MomentImages::analysis_ = nullptr;

}  // namespace

TEST_F(MomentImages, TheNextImagesOfTheSetInItsOrder) {
  const CompressionAnalysis& a = *analysis_;
  ASSERT_EQ(a.calibration_files.size(), size_t(kCalibration));
  const std::set<std::string> calibration(a.calibration_files.begin(), a.calibration_files.end());
  std::vector<std::string> expected;
  for (const ImageItem& i : set_->items)
    if (!calibration.count(i.path) && expected.size() < size_t(kMomentImages - kCalibration))
      expected.push_back(i.path);
  EXPECT_EQ(a.moment_files, expected);
}

TEST_F(MomentImages, MomentsOfDisjointSetsAdd) {
  const CompressionAnalysis& a = *analysis_;
  std::vector<std::string> all = a.calibration_files;
  all.insert(all.end(), a.moment_files.begin(), a.moment_files.end());
  const auto whole = layer_input_moments(*model_, load(all, *model_), 32);
  auto sum = layer_input_moments(*model_, load(a.calibration_files, *model_), 5);
  ImageSet more;
  for (const auto& f : a.moment_files) more.items.push_back({f, -1});
  std::vector<std::string> used;
  add_moments(sum, image_set_moments(*model_, more, 7, &used, nullptr));
  EXPECT_EQ(used, a.moment_files);
  ASSERT_EQ(sum.size(), whole.size());
  for (const auto& [layer, m] : whole) {
    EXPECT_EQ(sum.at(layer).rows, m.rows) << layer;
    EXPECT_TRUE(at::allclose(sum.at(layer).xtx, m.xtx, 1e-5, 1e-5 * m.xtx.abs().max().item<double>())) << layer;
  }
}

TEST_F(MomentImages, CompensationIsFittedThroughAllTheMomentImages) {
  const CompressionAnalysis& a = *analysis_;
  // The analysis' own sums (calibration images, then the others, in batches of 8): GPTQ's column order follows
  // diag(XᵀX), so a moment summed in another order may sweep near-tied columns differently.
  const auto calibration_only = layer_input_moments(*model_, load(a.calibration_files, *model_), 8);
  auto moments = calibration_only;
  ImageSet more;
  for (const auto& f : a.moment_files) more.items.push_back({f, -1});
  add_moments(moments, image_set_moments(*model_, more, 8, nullptr, nullptr));
  int checked = 0, more_rows_than_calibration_alone = 0;
  for (const LayerCandidates& l : a.layers) {
    if (l.layer.rfind("blocks.0.", 0) != 0 && l.layer.rfind("blocks.1.", 0) != 0) continue;  // a few suffice
    const at::Tensor H = compensation_moment(moments, l.layer);
    if (!H.defined()) {
      EXPECT_TRUE(l.weight_values.empty()) << l.layer;
      continue;
    }
    if (!compensation_moment(calibration_only, l.layer).defined()) ++more_rows_than_calibration_alone;
    const auto& info = model_->layer(l.layer);
    const LayerCandidates fresh = build_layer_candidates(l.layer, model_->weight(l.layer), a.lfh.at(l.layer),
                                                         info.low_rank_allowed, settings(kMomentImages).candidates, H);
    // Every tensor the cross-fit kept is the sweep through the moment of all the moment images.
    for (const auto& [bits, v] : l.weight_values) {
      EXPECT_TRUE(at::equal(v, fresh.weight_values.at(bits))) << l.layer << " Q" << bits;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
  // The demo's 12 calibration images give some layers too few rows to compensate; 31 images give them enough.
  EXPECT_GT(more_rows_than_calibration_alone, 0);
}

TEST_F(MomentImages, CacheKeysThemAndKeepsTheFiles) {
  const std::string dir = (std::filesystem::temp_directory_path() / "lorq-test-moment-images").string();
  std::filesystem::remove_all(dir);
  SessionCache with(dir, demo_->model_dir, *set_, settings(kMomentImages));
  SessionCache without(dir, demo_->model_dir, *set_, settings(0));
  SessionCache fewer(dir, demo_->model_dir, *set_, settings(kCalibration));  // no image beyond the calibration
  EXPECT_NE(with.key(), without.key());
  EXPECT_EQ(fewer.key(), without.key());
  with.save_analysis(*analysis_, true);
  CompressionAnalysis back;
  ASSERT_TRUE(with.load_analysis(true, &back, nullptr));
  EXPECT_EQ(back.moment_files, analysis_->moment_files);
  EXPECT_EQ(back.calibration_files, analysis_->calibration_files);
  // The sensitivity does not depend on the quantizer's settings: either analysis finds the other's.
  with.save_lfh(analysis_->lfh);
  std::map<std::string, at::Tensor> lfh;
  ASSERT_TRUE(without.load_lfh(&lfh, nullptr));
  EXPECT_EQ(lfh.size(), analysis_->lfh.size());
  SessionCache other_lfh(dir, demo_->model_dir, *set_, [] {
    CompressSettings s = settings(0);
    s.lfh.projections = 9;
    return s;
  }());
  EXPECT_FALSE(other_lfh.load_lfh(&lfh, nullptr));
  std::filesystem::remove_all(dir);
}

TEST_F(MomentImages, OlderCachesKeepTheirSensitivity) {
  // Before the sensitivity had its own key it was stored under the analysis' key.
  const std::string dir = (std::filesystem::temp_directory_path() / "lorq-test-moment-images-old").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  SessionCache cache(dir, demo_->model_dir, *set_, settings(0));
  std::vector<std::pair<std::string, at::Tensor>> t(analysis_->lfh.begin(), analysis_->lfh.end());
  write_tensors(dir + "/" + cache.key() + ".lfh.safetensors", t, {{"lorq_cache_key", cache.key()}});
  std::map<std::string, at::Tensor> lfh;
  ASSERT_TRUE(cache.load_lfh(&lfh, nullptr));
  EXPECT_TRUE(at::equal(lfh.at("head"), analysis_->lfh.at("head")));
  std::filesystem::remove_all(dir);
}

TEST_F(MomentImages, SessionLeavesThemOutOfEvaluation) {
  api::AnalysisSettings s = api::AnalysisSettings::fast();
  s.calibration_images = kCalibration;
  s.quantizer = "gptq";
  s.gptq_images = kMomentImages;
  s.estimate = true;  // the images seen do not depend on how the global errors are found
  auto session = api::CompressionSession::open(demo_->model_dir, demo_->images_dir, demo_->labels_csv, s, "");
  session->analyze({});
  const std::vector<std::string> seen = session->seen_images();
  EXPECT_EQ(seen.size(), size_t(kMomentImages));
  const api::EvalSummary e = session->evaluate_float(demo_->images_dir, demo_->labels_csv, 0, {});
  EXPECT_EQ(e.left_out, kMomentImages);
  EXPECT_EQ(e.images, static_cast<int64_t>(set_->size()) - kMomentImages);

  // The damping reaches the compensation: the same analysis with another damping prices its allocation otherwise.
  api::AnalysisSettings damped = s;
  damped.gptq_damping = 1.0;
  auto other = api::CompressionSession::open(demo_->model_dir, demo_->images_dir, demo_->labels_csv, damped, "");
  other->analyze({});
  const int64_t budget = session->budget_for_avg_bits(3.0);
  EXPECT_NE(session->make_allocator(api::Constraints{})->solve(budget).predicted_error,
            other->make_allocator(api::Constraints{})->solve(budget).predicted_error);

  // The settings travel in session files.
  const std::string path = (std::filesystem::temp_directory_path() / "lorq-test-moment-images.lorq").string();
  api::SessionFile f;
  f.model_path = demo_->model_dir;
  f.settings = s;
  f.settings.calibrated_errors = true;
  f.settings.gptq_damping = 0.25;
  api::save_session_file(path, f);
  EXPECT_EQ(api::load_session_file(path).settings.gptq_images, kMomentImages);
  EXPECT_EQ(api::load_session_file(path).settings.gptq_damping, 0.25);
  EXPECT_TRUE(api::load_session_file(path).settings.calibrated_errors);
  // Files written before calibrated errors existed were analysed with every anchor measured, and reopen so.
  {
    std::ofstream old(path);
    old << R"({"format": "lorq-session", "version": 2, "model": "m", "images": "i",
               "settings": {"calibration_images": 8, "quantizer": "gptq"}})";
  }
  EXPECT_FALSE(api::load_session_file(path).settings.calibrated_errors);
  EXPECT_EQ(api::load_session_file(path).settings.gptq_images, 0);
  EXPECT_EQ(api::load_session_file(path).settings.gptq_damping, 0.01);  // GPTQ's usual damping, then the only one
  EXPECT_TRUE(api::AnalysisSettings().calibrated_errors);  // new sessions calibrate
  std::filesystem::remove(path);
}
