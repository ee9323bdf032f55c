// The whole engine on a detector and a segmenter, through the one Session the CLI and the workbench drive:
// calibration, label-free Hessian, candidates, global errors, allocation at 4 and 3 average bits, evaluation with the
// task's metric (box mAP, mIoU) on held-out images, the comparison, export, and a reload whose outputs equal the
// in-memory compressed model's bit for bit. The models are the Hugging Face random-weight checkpoints of ../shared
// with their image processor set to the demo scenes' 128 px (a real checkpoint's 800/512 px would take minutes per
// test here); the images are generated scenes with boxes and label maps.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <regex>

#include "lorq/common/file_util.h"
#include "lorq/demo/scenes.h"
#include "lorq/session/api.h"
#include "shared_data.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

std::string temp(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lorq_task_pipeline_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// A copy of a ../shared checkpoint whose preprocessor_config.json asks for `size_json` instead.
std::string with_size(const std::string& shared_model, const std::string& name, const std::string& size_json) {
  const std::string dir = temp(name);
  for (const char* f : {"config.json", "model.safetensors", "preprocessor_config.json"})
    fs::copy_file(shared_model + "/" + f, dir + "/" + f);
  std::string pre = read_text_file(dir + "/preprocessor_config.json");
  pre = std::regex_replace(pre, std::regex(R"("size"\s*:\s*\{[^}]*\})"), "\"size\": " + size_json);
  write_text_atomically(dir + "/preprocessor_config.json", pre);
  return dir;
}

// 24 scenes: 16 calibrate, 8 are held out for the evaluation.
std::string scenes(int max_class) {
  const std::string dir = temp("scenes_" + std::to_string(max_class));
  ScenesDatasetSpec spec;
  spec.count = 24;
  spec.seed = 77;
  write_scenes_dataset(dir, spec);
  // The random segmenter has 6 classes, the scenes 7 (background + 6): fold the last class into the one before.
  for (const auto& e : fs::directory_iterator(dir + "/annotations")) {
    cv::Mat m = cv::imread(e.path().string(), cv::IMREAD_UNCHANGED);
    cv::min(m, max_class, m);
    cv::imwrite(e.path().string(), m);
  }
  return dir + "/images";
}

api::AnalysisSettings settings() {
  api::AnalysisSettings s = api::AnalysisSettings::fast();  // 16 calibration images, 4 LFH images
  s.projections = 8;
  return s;
}

double metric(const api::EvalSummary& e, const std::string& name) {
  for (const MetricValue& m : e.metrics)
    if (m.name == name) return m.value;
  ADD_FAILURE() << "no metric " << name;
  return -1;
}

void run_pipeline(const std::string& model_dir, const std::string& images, const std::vector<std::string>& metrics,
                  int64_t held_out = 8, std::vector<double>* float_and_compressed = nullptr,
                  const std::string& recorded = "") {
  const std::string& record = recorded.empty() ? metrics[0] : recorded;
  auto session = api::CompressionSession::open(model_dir, images, "", settings(), "");
  session->analyze({});
  ASSERT_TRUE(session->analyzed());
  auto allocator = session->make_allocator(api::Constraints{});
  const api::EvalSummary f = session->evaluate_float(images, "", 0, {});
  EXPECT_EQ(f.images, held_out);
  EXPECT_EQ(f.left_out, 16);
  if (float_and_compressed) float_and_compressed->push_back(metric(f, record));
  for (const std::string& m : metrics) EXPECT_GE(metric(f, m), 0.0);
  for (double bits : {4.0, 3.0}) {
    SCOPED_TRACE("average bits " + std::to_string(bits));
    const api::Allocation a = allocator->solve_checked(session->budget_for_avg_bits(bits));
    EXPECT_LE(a.bytes, a.budget_bytes);
    EXPECT_GT(a.predicted_error, 0.0);
    const api::EvalSummary q = session->evaluate_compressed(a, images, "", 0, {});
    ASSERT_EQ(q.metrics.size(), metrics.size());
    for (size_t i = 0; i < metrics.size(); ++i) EXPECT_EQ(q.metrics[i].name, metrics[i]);
    if (float_and_compressed) float_and_compressed->push_back(metric(q, record));

    // The export reloads to the same outputs, bit for bit.
    const api::ComparisonResult c = session->compare(images, "", 8, 5, a, {});
    ASSERT_EQ(c.images.size(), 8u);
    // Fidelity figures are a classifier's (one logits row per image).
    EXPECT_FALSE(q.has_fidelity);
    EXPECT_FALSE(c.compressed_eval.has_fidelity);
    const std::string out = temp("export_" + std::to_string(static_cast<int>(bits)));
    session->export_to(out, a);
    auto reloaded = api::ModelHandle::open(out);
    EXPECT_EQ(reloaded->summary().task, session->model().task);
    for (const api::ImageComparison& ic : c.images) {
      const ImagePrediction p = reloaded->predict_image(ic.path, 5, c.min_score);
      if (p.task == TaskKind::Detection) {
        ASSERT_EQ(p.detections.size(), ic.compressed_detections.size()) << ic.path;
        for (size_t k = 0; k < p.detections.size(); ++k) {
          const Detection &x = p.detections[k], &y = ic.compressed_detections[k];
          EXPECT_EQ(x.class_index, y.class_index);
          EXPECT_EQ(x.score, y.score);
          EXPECT_EQ(x.x0, y.x0);
          EXPECT_EQ(x.y0, y.y0);
          EXPECT_EQ(x.x1, y.x1);
          EXPECT_EQ(x.y1, y.y1);
        }
      } else {
        ASSERT_EQ(p.label_map.classes.size(), ic.compressed_map.classes.size()) << ic.path;
        EXPECT_TRUE(p.label_map.classes == ic.compressed_map.classes) << ic.path;
        EXPECT_EQ(p.label_map.width, ic.width);
      }
    }
  }
}

}  // namespace

TEST(TaskPipelines, YolosDetectorEndToEnd) {
  const std::string shared = testdata::shared_path("models/yolos_micro_random");
  LORQ_REQUIRE_SHARED_FILE(shared + "/model.safetensors");
  run_pipeline(with_size(shared, "yolos", R"({"shortest_edge": 128, "longest_edge": 128})"), scenes(6),
               {"mAP", "mAP@.5"});
}

TEST(TaskPipelines, SegformerSegmenterEndToEnd) {
  const std::string shared = testdata::shared_path("models/segformer_micro_random");
  LORQ_REQUIRE_SHARED_FILE(shared + "/model.safetensors");
  run_pipeline(with_size(shared, "segformer", R"({"height": 128, "width": 128})"), scenes(5),
               {"mIoU", "pixel accuracy"});
}

TEST(TaskPipelines, DemoSegmenterKeepsItsMiouAtFourBits) {
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.segmenter_dir.empty()) << "datasets/demo-segformer is not installed";
  ASSERT_FALSE(demo.scenes_dir.empty()) << "datasets/demo-scenes is not installed";
  std::vector<double> miou;  // float, 4 bits, 3 bits (percent, on the 84 scenes not calibrated on)
  run_pipeline(demo.segmenter_dir, demo.scenes_dir, {"mIoU", "pixel accuracy"}, 84, &miou);
  ASSERT_EQ(miou.size(), 3u);
  std::printf("demo segmenter mIoU: float %.2f%%, 4 bits %.2f%%, 3 bits %.2f%%\n", miou[0], miou[1], miou[2]);
  EXPECT_GT(miou[0], 70.0);            // the issue's target for the demo segmenter (random weights: ~5 %)
  EXPECT_GT(miou[1], miou[0] - 5.0);  // 4 average bits keep it
}

TEST(TaskPipelines, DemoDetectorKeepsItsMapAtFourBits) {
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.detector_dir.empty()) << "datasets/demo-yolos is not installed";
  ASSERT_FALSE(demo.scenes_dir.empty()) << "datasets/demo-scenes is not installed";
  std::vector<double> map50;  // float, 4 bits, 3 bits (mAP@.5 in percent, on the 84 scenes not calibrated on)
  run_pipeline(demo.detector_dir, demo.scenes_dir, {"mAP", "mAP@.5"}, 84, &map50, "mAP@.5");
  ASSERT_EQ(map50.size(), 3u);
  std::printf("demo detector mAP@.5: float %.2f%%, 4 bits %.2f%%, 3 bits %.2f%%\n", map50[0], map50[1], map50[2]);
  // The demo detector's target (untrained: ~0 %); the shipped model is well above it (README, the embedded demo), so
  // this also guards against regressions in the engine or the model files.
  EXPECT_GT(map50[0], 60.0);
  EXPECT_GT(map50[1], map50[0] - 5.0);  // 4 average bits keep it
}
