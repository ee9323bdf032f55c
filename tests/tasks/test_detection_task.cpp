// The detection and segmentation task objects: ground truth from the usual dataset layouts, detections mapped back
// to the original image through padding and resizing, the change score, label maps at the image size, and the
// metrics fed through the evaluator's batch interface.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "lorq/common/error.h"
#include "lorq/io/images.h"
#include "lorq/tasks/detection.h"
#include "lorq/tasks/segmentation.h"
#include "shared_data.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::path(::testing::TempDir()) / name) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write_png(const fs::path& p, int h, int w, uint8_t value = 128) {
  fs::create_directories(p.parent_path());
  cv::imwrite(p.string(), cv::Mat(h, w, CV_8UC3, cv::Scalar(value, value, value)));
}

void write_text(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Detection outputs for one image: query q has logits favouring class `cls` (or "no object" when cls < 0) and a box.
ModelOutputs detector_outputs(const std::vector<std::pair<int, std::array<float, 4>>>& queries, int classes) {
  at::Tensor logits = at::zeros({1, static_cast<int64_t>(queries.size()), classes + 1});
  at::Tensor boxes = at::zeros({1, static_cast<int64_t>(queries.size()), 4});
  for (size_t q = 0; q < queries.size(); ++q) {
    const int cls = queries[q].first;
    logits[0][q][cls < 0 ? classes : cls] = 8.0f;  // softmax ≈ 0.99 on that class
    for (int k = 0; k < 4; ++k) boxes[0][q][k] = queries[q].second[k];
  }
  ModelOutputs o;
  o.add("logits", logits);
  o.add("boxes", boxes);
  return o;
}

}  // namespace

TEST(DetectionSets, YoloLayoutGivesNormalizedBoxesAndEmptyImagesHaveNoObjects) {
  TempDir d("yolo_layout");
  write_png(d.path / "images/val/a.png", 40, 80);
  write_png(d.path / "images/val/b.png", 40, 80);
  write_text(d.path / "labels/val/a.txt", "1 0.5 0.25 0.5 0.5\n0 0.25 0.75 0.1 0.1\n");
  const ImageSet set = open_image_set((d.path / "images/val").string(), "", {}, TaskKind::Detection);
  ASSERT_EQ(set.size(), 2u);
  EXPECT_TRUE(set.labeled());
  ASSERT_EQ(set.items[0].boxes.size(), 2u);
  const BoxTarget b = set.items[0].boxes[0].pixels(80, 40);
  EXPECT_EQ(b.class_index, 1);
  EXPECT_DOUBLE_EQ(b.x0, 20);
  EXPECT_DOUBLE_EQ(b.x1, 60);
  EXPECT_DOUBLE_EQ(b.y0, 0);
  EXPECT_DOUBLE_EQ(b.y1, 20);
  EXPECT_TRUE(set.items[1].has_boxes);  // no label file: an image without objects, not an unlabeled one
  EXPECT_TRUE(set.items[1].boxes.empty());
  // A classifier reads the same folder as plain images.
  EXPECT_FALSE(open_image_set((d.path / "images/val").string(), "", {}, TaskKind::Classification).labeled());
}

TEST(DetectionSets, YoloClassesMapOntoCocoIdsWithPlaceholders) {
  TempDir d("yolo_coco");
  write_png(d.path / "images/a.png", 10, 10);
  write_text(d.path / "labels/a.txt", "1 0.5 0.5 0.2 0.2\n");
  const std::vector<std::string> names = {"N/A", "person", "N/A", "bicycle"};  // COCO-91 style
  const ImageSet set = open_image_set((d.path / "images").string(), "", names, TaskKind::Detection);
  EXPECT_EQ(set.items[0].boxes.at(0).class_index, 3);  // YOLO class 1 = the second real label
  write_text(d.path / "labels/a.txt", "2 0.5 0.5 0.2 0.2\n");
  EXPECT_THROW(open_image_set((d.path / "images").string(), "", names, TaskKind::Detection), Error);
}

TEST(DetectionSets, LabelsCsvWithBoxColumnsGroupsRowsPerImage) {
  TempDir d("det_csv");
  write_png(d.path / "images/a.png", 10, 10);
  write_png(d.path / "images/b.png", 10, 10);
  write_text(d.path / "labels.csv",
             "file,class_index,class_name,x0,y0,x1,y1\na.png,2,star,1,2,5,6\nb.png,0,circle,0,0,3,3\na.png,1,sq,4,4,9,9\n");
  const ImageSet set = open_image_set((d.path / "images").string(), "", {}, TaskKind::Detection);
  ASSERT_EQ(set.size(), 2u);
  ASSERT_EQ(set.items[0].boxes.size(), 2u);
  EXPECT_EQ(set.items[0].boxes[1].class_index, 1);
  EXPECT_DOUBLE_EQ(set.items[0].boxes[1].x1, 9);
  EXPECT_FALSE(set.items[0].boxes[0].normalized);
  write_text(d.path / "labels.csv", "file,class_index,x0,y0,x1,y1\na.png,2,1,2,abc,6\n");
  try {
    open_labels_csv((d.path / "labels.csv").string());
    FAIL() << "a non-numeric coordinate must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("line 2"), std::string::npos) << e.what();
  }
}

TEST(SegmentationSets, AnnotationsBesideTheImages) {
  TempDir d("seg_layout");
  write_png(d.path / "images/training/a.png", 6, 8);
  write_png(d.path / "images/training/b.png", 6, 8);
  fs::create_directories(d.path / "annotations/training");
  cv::imwrite((d.path / "annotations/training/a.png").string(), cv::Mat(6, 8, CV_8UC1, cv::Scalar(3)));
  const ImageSet set = open_image_set((d.path / "images/training").string(), "", {}, TaskKind::Segmentation);
  ASSERT_EQ(set.size(), 2u);
  EXPECT_FALSE(set.items[0].label_map.empty());
  EXPECT_TRUE(set.items[1].label_map.empty());  // no annotation: unlabeled
}

TEST(DetectionTask, DetectionsMapBackThroughPaddingAndResize) {
  // A 100x200 (h x w) image resized to 50x100, padded to a 64x128 input: relative boxes are of the padded input.
  const ModelOutputs y = detector_outputs({{2, {0.5f, 0.5f, 0.25f, 0.5f}}, {-1, {0.5f, 0.5f, 0.1f, 0.1f}}}, 3);
  const ImageGeometry g{100, 200, 50, 100};
  const std::vector<Detection> d = detections_of(y, 0, 64, 128, g, 0.5);
  ASSERT_EQ(d.size(), 1u);  // the "no object" query is dropped by the threshold
  EXPECT_EQ(d[0].class_index, 2);
  // cx 0.5 of 128 input px = 64 input px = 128 image px; w 0.25 * 128 = 32 input px = 64 image px.
  EXPECT_NEAR(d[0].x0, 128 - 32, 1e-3);
  EXPECT_NEAR(d[0].x1, 128 + 32, 1e-3);
  // cy 0.5 of 64 = 32 input px = 64 image px; h 0.5 * 64 = 32 input px = 64 image px.
  EXPECT_NEAR(d[0].y0, 64 - 32, 1e-3);
  EXPECT_NEAR(d[0].y1, 64 + 32, 1e-3);
  // Threshold 0 keeps every token, in token order.
  EXPECT_EQ(detections_of(y, 0, 64, 128, g, 0.0).size(), 2u);
}

TEST(DetectionTask, ChangeCountsLostNewAndMovedBoxes) {
  const DetectionTask task;
  const ModelOutputs f = detector_outputs({{0, {0.3f, 0.3f, 0.2f, 0.2f}}, {1, {0.7f, 0.7f, 0.2f, 0.2f}}, {-1, {}}}, 2);
  EXPECT_EQ(task.output_change(f, f).score, 0.0);
  // Query 1 loses its object, query 2 invents one, query 0 moves a little.
  const ModelOutputs q = detector_outputs({{0, {0.31f, 0.3f, 0.2f, 0.2f}}, {-1, {}}, {1, {0.2f, 0.8f, 0.1f, 0.1f}}}, 2);
  const OutputChange c = task.output_change(f, q);
  EXPECT_EQ(c.matched, 1);
  EXPECT_EQ(c.lost, 1);
  EXPECT_EQ(c.added, 1);
  EXPECT_GT(c.score, 2.0);
  EXPECT_LT(c.score, 2.2);
}

TEST(DetectionTask, MetricOfPerfectDetectionsIsOne) {
  TempDir d("det_metric");
  write_png(d.path / "images/a.png", 100, 200);
  write_text(d.path / "labels/a.txt", "1 0.5 0.5 0.5 0.5\n");
  const ImageSet set = open_image_set((d.path / "images").string(), "", {}, TaskKind::Detection);
  ImageBatch batch;
  batch.images = at::zeros({1, 3, 50, 100});
  batch.indices = {0};
  batch.labels = {-1};
  batch.geometry = {{100, 200, 50, 100}};
  auto metric = DetectionTask().new_metric();
  metric->add(detector_outputs({{1, {0.5f, 0.5f, 0.5f, 0.5f}}, {-1, {}}}, 2), set, batch);
  ASSERT_EQ(metric->labeled(), 1);
  const auto v = metric->values();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_NEAR(v[0].value, 100.0, 1e-6);  // mAP@[.5:.95]
  EXPECT_NEAR(v[1].value, 100.0, 1e-6);  // mAP@.5
}

TEST(SegmentationTask, LabelMapIsTheUpsampledArgmaxAtImageSize) {
  // Logits [1, 2, 4, 6] over a padded 16x24 input whose image part is 8x24 (the top half): the map covers rows 0-1.
  at::Tensor logits = at::zeros({1, 2, 4, 6});
  logits[0][1].slice(0, 0, 1).fill_(5.0);  // class 1 in the first logit row
  ModelOutputs y;
  y.add("logits", logits);
  const LabelMap m = label_map_of(y, 0, 16, 24, ImageGeometry{20, 30, 8, 24});
  ASSERT_EQ(m.width, 30);
  ASSERT_EQ(m.height, 20);
  // Reference: crop to 2 logit rows, bilinear to 20x30 (align_corners false), argmax.
  const at::Tensor ref =
      at::upsample_bilinear2d(logits.slice(2, 0, 2), {20, 30}, false)[0].argmax(0).to(at::kByte).contiguous();
  for (int yy = 0; yy < 20; ++yy)
    for (int xx = 0; xx < 30; ++xx) ASSERT_EQ(m.at(xx, yy), ref[yy][xx].item<uint8_t>()) << xx << "," << yy;
  EXPECT_EQ(m.at(0, 0), 1);
  EXPECT_EQ(m.at(0, 19), 0);
}

TEST(SegmentationTask, MetricReadsLabelMapsAndChangeIsThePixelFraction) {
  TempDir d("seg_metric");
  write_png(d.path / "images/a.png", 4, 4);
  fs::create_directories(d.path / "annotations");
  cv::Mat truth(4, 4, CV_8UC1, cv::Scalar(1));
  truth.at<uint8_t>(0, 0) = 255;  // ignored
  cv::imwrite((d.path / "annotations/a.png").string(), truth);
  const ImageSet set = open_image_set((d.path / "images").string(), "", {}, TaskKind::Segmentation);
  at::Tensor logits = at::zeros({1, 2, 4, 4});
  logits[0][1].fill_(3.0);
  ModelOutputs y;
  y.add("logits", logits);
  ImageBatch batch;
  batch.images = at::zeros({1, 3, 4, 4});
  batch.indices = {0};
  batch.labels = {-1};
  batch.geometry = {{4, 4, 4, 4}};
  auto metric = SegmentationTask().new_metric();
  metric->add(y, set, batch);
  const auto v = metric->values();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_NEAR(v[0].value, 100.0, 1e-9);  // class 1 everywhere that counts; class 0 absent from both: left out
  EXPECT_NEAR(v[1].value, 100.0, 1e-9);
  at::Tensor other = logits.clone();
  other[0][0][0][0] = 10.0;  // one pixel of 16 changes class
  ModelOutputs z;
  z.add("logits", other);
  EXPECT_NEAR(SegmentationTask().output_change(y, z).score, 1.0 / 16, 1e-12);
}
