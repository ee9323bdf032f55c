#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/demo/scenes.h"
#include "lorq/demo/shapes_dataset.h"

namespace {

namespace fs = std::filesystem;

bool same_bytes(const cv::Mat& a, const cv::Mat& b) {
  if (a.type() != b.type() || a.size() != b.size()) return false;
  for (int y = 0; y < a.rows; ++y) {
    if (std::memcmp(a.ptr(y), b.ptr(y), a.cols * a.elemSize()) != 0) return false;
  }
  return true;
}

uint64_t fnv(uint64_t h, const cv::Mat& m) {
  for (int y = 0; y < m.rows; ++y) {
    const uchar* row = m.ptr(y);
    for (size_t i = 0; i < m.cols * m.elemSize(); ++i) h = (h ^ row[i]) * 1099511628211ULL;
  }
  return h;
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> fields;
  std::stringstream ss(line);
  std::string field;
  while (std::getline(ss, field, sep)) fields.push_back(field);
  return fields;
}

TEST(Scenes, Deterministic) {
  for (int64_t index : {0, 1, 5, 17, 1234567}) {
    const lorq::Scene a = lorq::generate_scene(42, index);
    const lorq::Scene b = lorq::generate_scene(42, index);
    EXPECT_TRUE(same_bytes(a.image, b.image)) << index;
    EXPECT_TRUE(same_bytes(a.label_map, b.label_map)) << index;
    ASSERT_EQ(a.objects.size(), b.objects.size());
    for (size_t k = 0; k < a.objects.size(); ++k) {
      EXPECT_EQ(a.objects[k].class_index, b.objects[k].class_index);
      EXPECT_EQ(a.objects[k].box, b.objects[k].box);
      EXPECT_TRUE(same_bytes(a.objects[k].mask, b.objects[k].mask));
    }
  }
  const lorq::Scene base = lorq::generate_scene(42, 3);
  EXPECT_FALSE(same_bytes(base.image, lorq::generate_scene(42, 4).image));
  EXPECT_FALSE(same_bytes(base.image, lorq::generate_scene(43, 3).image));
}

TEST(Scenes, KnownChecksum) {
  // Pins the generator: a change here changes the shipped scenes and the demo detector/segmenter trained on them.
  const lorq::Scene s = lorq::generate_scene(1, 0);
  uint64_t h = fnv(fnv(1469598103934665603ULL, s.image), s.label_map);
  std::string objects;
  for (const lorq::SceneObject& o : s.objects) {
    h = fnv(h, o.mask);
    objects += std::to_string(o.class_index) + ":" + std::to_string(o.box.x) + "," + std::to_string(o.box.y) + "," +
               std::to_string(o.box.width) + "," + std::to_string(o.box.height) + " ";
  }
  RecordProperty("objects", objects);
  EXPECT_EQ(h, 17848755655295215985ULL) << objects;
}

TEST(Scenes, Invariants) {
  for (int size : {32, 64, 97, 128}) {
    for (int64_t index = 0; index < 40; ++index) {
      const lorq::Scene s = lorq::generate_scene(7, index, size);
      SCOPED_TRACE("size " + std::to_string(size) + " index " + std::to_string(index));
      ASSERT_EQ(s.image.type(), CV_8UC3);
      ASSERT_EQ(s.label_map.type(), CV_8UC1);
      ASSERT_EQ(s.image.size(), cv::Size(size, size));
      ASSERT_EQ(s.label_map.size(), cv::Size(size, size));
      ASSERT_GE(s.objects.size(), 1u);
      ASSERT_LE(s.objects.size(), 4u);
      // The label map, rebuilt from the instance masks, which must be binary and pairwise disjoint.
      cv::Mat rebuilt = cv::Mat::zeros(size, size, CV_8UC1);
      cv::Mat claimed = cv::Mat::zeros(size, size, CV_8UC1);
      for (const lorq::SceneObject& o : s.objects) {
        ASSERT_EQ(o.mask.type(), CV_8UC1);
        ASSERT_EQ(o.mask.size(), cv::Size(size, size));
        EXPECT_EQ(cv::countNonZero((o.mask != 0) & (o.mask != 255)), 0);
        EXPECT_GT(cv::countNonZero(o.mask), 0);
        EXPECT_EQ(cv::countNonZero(claimed & o.mask), 0) << "instance masks overlap";
        claimed |= o.mask;
        ASSERT_GE(o.class_index, 0);
        ASSERT_LT(o.class_index, 6);
        rebuilt.setTo(cv::Scalar(o.class_index + 1), o.mask);
        // The box is tight around the visible pixels and inside the image.
        EXPECT_EQ(o.box, cv::boundingRect(o.mask));
        EXPECT_GE(o.box.x, 0);
        EXPECT_GE(o.box.y, 0);
        EXPECT_LE(o.box.x + o.box.width, size);
        EXPECT_LE(o.box.y + o.box.height, size);
        const cv::Mat inside = o.mask(o.box);
        EXPECT_GT(cv::countNonZero(inside.row(0)), 0);
        EXPECT_GT(cv::countNonZero(inside.row(inside.rows - 1)), 0);
        EXPECT_GT(cv::countNonZero(inside.col(0)), 0);
        EXPECT_GT(cv::countNonZero(inside.col(inside.cols - 1)), 0);
      }
      EXPECT_TRUE(same_bytes(rebuilt, s.label_map));
    }
  }
}

TEST(Scenes, VariedAndOverlapping) {
  std::map<size_t, int> counts;
  std::set<int> classes;
  int overlapping_scenes = 0, occluded_objects = 0;
  int smallest = 1 << 30, largest = 0;
  for (int64_t index = 0; index < 300; ++index) {
    const lorq::Scene s = lorq::generate_scene(5, index);
    ++counts[s.objects.size()];
    bool overlap = false;
    for (size_t k = 0; k < s.objects.size(); ++k) {
      const lorq::SceneObject& o = s.objects[k];
      classes.insert(o.class_index);
      smallest = std::min(smallest, std::max(o.box.width, o.box.height));
      largest = std::max(largest, std::max(o.box.width, o.box.height));
      for (size_t j = k + 1; j < s.objects.size(); ++j) overlap = overlap || (o.box & s.objects[j].box).area() > 0;
    }
    overlapping_scenes += overlap ? 1 : 0;
    // An occluded object: the later objects' pixels inside its convex hull region (its box) are not its own.
    for (size_t k = 0; k + 1 < s.objects.size(); ++k) {
      cv::Mat later = cv::Mat::zeros(s.label_map.size(), CV_8UC1);
      for (size_t j = k + 1; j < s.objects.size(); ++j) later |= s.objects[j].mask;
      occluded_objects += cv::countNonZero(later(s.objects[k].box)) > 0 ? 1 : 0;
    }
  }
  for (size_t n = 1; n <= 4; ++n) EXPECT_GE(counts[n], 40) << n << " objects";
  EXPECT_EQ(classes.size(), 6u);
  EXPECT_GE(overlapping_scenes, 30);
  EXPECT_GE(occluded_objects, 20);
  EXPECT_LE(smallest, 30);  // 128 px images: objects from ~20 px to ~56 px across
  EXPECT_GE(largest, 48);
  RecordProperty("overlapping_scenes", overlapping_scenes);
}

TEST(Scenes, ObjectsContrastWithBackground) {
  for (int64_t index = 0; index < 100; ++index) {
    const lorq::Scene s = lorq::generate_scene(3, index);
    const cv::Mat background = s.label_map == 0;
    const cv::Scalar out = cv::mean(s.image, background);
    for (const lorq::SceneObject& o : s.objects) {
      const cv::Scalar in = cv::mean(s.image, o.mask);
      const double d = (std::abs(in[0] - out[0]) + std::abs(in[1] - out[1]) + std::abs(in[2] - out[2])) / 3.0;
      EXPECT_GT(d, 20.0) << index;
    }
  }
}

TEST(Scenes, YoloLine) {
  EXPECT_EQ(lorq::yolo_line(3, cv::Rect(10, 20, 30, 41), 100, 200), "3 0.250000 0.202500 0.300000 0.205000");
}

TEST(Scenes, RejectsBadArguments) {
  EXPECT_THROW(lorq::generate_scene(1, -1), lorq::Error);
  EXPECT_THROW(lorq::generate_scene(1, 0, 16), lorq::Error);
  lorq::ScenesDatasetSpec spec;
  spec.count = 0;
  EXPECT_THROW(lorq::write_scenes_dataset(testing::TempDir() + "/lorq_scenes_bad", spec), lorq::Error);
}

TEST(Scenes, WritesDataset) {
  const fs::path dir = fs::path(testing::TempDir()) / "lorq_scenes_dataset_test" / "nested";
  fs::remove_all(dir.parent_path());
  lorq::ScenesDatasetSpec spec;
  spec.count = 12;
  spec.seed = 11;
  spec.size = 96;
  lorq::write_scenes_dataset(dir.string(), spec);

  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  }
  std::ifstream csv(dir / "labels.csv");
  ASSERT_TRUE(csv);
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "file,class_index,class_name,x0,y0,x1,y1");
  std::vector<std::vector<std::string>> rows;
  while (std::getline(csv, line)) rows.push_back(split(line, ','));

  size_t row = 0;
  for (int64_t i = 0; i < spec.count; ++i) {
    const lorq::Scene s = lorq::generate_scene(11, i, 96);
    char stem[32];
    std::snprintf(stem, sizeof stem, "%06lld", static_cast<long long>(i));
    SCOPED_TRACE(stem);
    const cv::Mat image = cv::imread((dir / "images" / (std::string(stem) + ".png")).string(), cv::IMREAD_UNCHANGED);
    const cv::Mat labels =
        cv::imread((dir / "annotations" / (std::string(stem) + ".png")).string(), cv::IMREAD_UNCHANGED);
    EXPECT_TRUE(same_bytes(image, s.image));
    EXPECT_TRUE(same_bytes(labels, s.label_map));

    // YOLO lines parse back to the same boxes within the 6-decimal rounding.
    std::ifstream txt(dir / "labels" / (std::string(stem) + ".txt"));
    ASSERT_TRUE(txt);
    std::vector<std::string> lines;
    while (std::getline(txt, line)) lines.push_back(line);
    ASSERT_EQ(lines.size(), s.objects.size());
    for (size_t k = 0; k < s.objects.size(); ++k) {
      const cv::Rect& b = s.objects[k].box;
      std::istringstream in(lines[k]);
      int cls = -1;
      double cx = 0, cy = 0, w = 0, h = 0;
      ASSERT_TRUE(in >> cls >> cx >> cy >> w >> h) << lines[k];
      EXPECT_EQ(cls, s.objects[k].class_index);
      const double tol = 96 * 1e-6;
      EXPECT_NEAR((cx - w / 2) * 96, b.x, tol);
      EXPECT_NEAR((cy - h / 2) * 96, b.y, tol);
      EXPECT_NEAR((cx + w / 2) * 96, b.x + b.width, tol);
      EXPECT_NEAR((cy + h / 2) * 96, b.y + b.height, tol);

      ASSERT_LT(row, rows.size());
      const std::vector<std::string>& f = rows[row++];
      ASSERT_EQ(f.size(), 7u);
      EXPECT_EQ(f[0], std::string(stem) + ".png");
      EXPECT_EQ(std::stoi(f[1]), s.objects[k].class_index);
      EXPECT_EQ(f[2], lorq::shape_class_names()[static_cast<size_t>(s.objects[k].class_index)]);
      EXPECT_EQ(cv::Rect(cv::Point(std::stoi(f[3]), std::stoi(f[4])), cv::Point(std::stoi(f[5]), std::stoi(f[6]))), b);
    }
  }
  EXPECT_EQ(row, rows.size());
  fs::remove_all(dir.parent_path());
}

}  // namespace
