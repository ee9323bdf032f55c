#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "lorq/common/error.h"
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

// Mean over the 3 channels of |mean colour inside the mask - mean colour outside|.
double object_background_difference(const lorq::ShapeSample& s) {
  cv::Mat outside;
  cv::bitwise_not(s.mask, outside);
  const cv::Scalar in = cv::mean(s.image, s.mask), out = cv::mean(s.image, outside);
  return (std::abs(in[0] - out[0]) + std::abs(in[1] - out[1]) + std::abs(in[2] - out[2])) / 3.0;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> fields;
  std::stringstream ss(line);
  std::string field;
  while (std::getline(ss, field, ',')) fields.push_back(field);
  return fields;
}

TEST(ShapesDataset, ClassNames) {
  const std::vector<std::string> expected = {"circle", "square", "triangle", "star", "cross", "ring"};
  EXPECT_EQ(lorq::shape_class_names(), expected);
}

TEST(ShapesDataset, Deterministic) {
  for (int64_t index : {0, 1, 5, 17, 1234567}) {
    const lorq::ShapeSample a = lorq::generate_shape_sample(42, index);
    const lorq::ShapeSample b = lorq::generate_shape_sample(42, index);
    EXPECT_TRUE(same_bytes(a.image, b.image)) << index;
    EXPECT_TRUE(same_bytes(a.mask, b.mask)) << index;
    EXPECT_EQ(a.class_index, b.class_index);
    EXPECT_EQ(a.box, b.box);
  }
  // Other index, other seed: other image.
  const lorq::ShapeSample base = lorq::generate_shape_sample(42, 3);
  EXPECT_FALSE(same_bytes(base.image, lorq::generate_shape_sample(42, 9).image));  // same class, other index
  EXPECT_FALSE(same_bytes(base.image, lorq::generate_shape_sample(42, 4).image));
  EXPECT_FALSE(same_bytes(base.image, lorq::generate_shape_sample(43, 3).image));
}

TEST(ShapesDataset, KnownChecksum) {
  // Pins the generator: a change here changes every shipped dataset and the demo model trained on it.
  const lorq::ShapeSample s = lorq::generate_shape_sample(1, 0);
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over image then mask bytes
  for (const cv::Mat* m : {&s.image, &s.mask}) {
    for (int y = 0; y < m->rows; ++y) {
      const uchar* row = m->ptr(y);
      for (size_t i = 0; i < m->cols * m->elemSize(); ++i) h = (h ^ row[i]) * 1099511628211ULL;
    }
  }
  EXPECT_EQ(h, 16088038959168617959ULL);
}

TEST(ShapesDataset, SampleInvariants) {
  for (int size : {16, 32, 64, 96}) {
    for (int64_t index = 0; index < 60; ++index) {
      const lorq::ShapeSample s = lorq::generate_shape_sample(7, index, size);
      SCOPED_TRACE("size " + std::to_string(size) + " index " + std::to_string(index));
      EXPECT_EQ(s.class_index, index % 6);
      ASSERT_EQ(s.image.type(), CV_8UC3);
      ASSERT_EQ(s.mask.type(), CV_8UC1);
      ASSERT_EQ(s.image.size(), cv::Size(size, size));
      ASSERT_EQ(s.mask.size(), cv::Size(size, size));
      // Binary mask, non-empty, box tight and inside the image.
      cv::Mat not_binary = (s.mask != 0) & (s.mask != 255);
      EXPECT_EQ(cv::countNonZero(not_binary), 0);
      EXPECT_GT(cv::countNonZero(s.mask), 0);
      EXPECT_EQ(s.box, cv::boundingRect(s.mask));
      EXPECT_GE(s.box.x, 0);
      EXPECT_GE(s.box.y, 0);
      EXPECT_LE(s.box.x + s.box.width, size);
      EXPECT_LE(s.box.y + s.box.height, size);
      // Roughly 35..75% of the side across (the square's and triangle's boxes are smaller than the circle's).
      EXPECT_GE(std::max(s.box.width, s.box.height), size / 5);
      EXPECT_LE(std::max(s.box.width, s.box.height), size * 3 / 4 + 2);
    }
  }
}

TEST(ShapesDataset, RingHasHole) {
  for (int64_t index = 5; index < 600; index += 6) {
    const lorq::ShapeSample s = lorq::generate_shape_sample(1, index);
    ASSERT_EQ(s.class_index, 5);
    const cv::Point centre(s.box.x + s.box.width / 2, s.box.y + s.box.height / 2);
    EXPECT_EQ(s.mask.at<uchar>(centre), 0) << index;
  }
  // Solid shapes are filled at the centre of the box.
  for (int64_t index : {0, 1, 4, 6, 7, 10}) {
    const lorq::ShapeSample s = lorq::generate_shape_sample(1, index);
    const cv::Point centre(s.box.x + s.box.width / 2, s.box.y + s.box.height / 2);
    EXPECT_EQ(s.mask.at<uchar>(centre), 255) << index;
  }
}

TEST(ShapesDataset, ObjectContrastsWithBackground) {
  double worst = 1e9;
  for (int64_t index = 0; index < 300; ++index) {
    const double d = object_background_difference(lorq::generate_shape_sample(3, index));
    worst = std::min(worst, d);
    EXPECT_GT(d, 20.0) << index;
  }
  RecordProperty("worst_difference", std::to_string(worst));
}

TEST(ShapesDataset, VariedAcrossSamples) {
  // Positions and sizes vary within a class.
  std::vector<cv::Rect> boxes;
  for (int64_t index = 0; index < 60; index += 6) boxes.push_back(lorq::generate_shape_sample(1, index).box);
  int distinct = 0;
  for (size_t i = 0; i < boxes.size(); ++i) {
    bool seen = false;
    for (size_t j = 0; j < i; ++j) seen = seen || boxes[j] == boxes[i];
    distinct += seen ? 0 : 1;
  }
  EXPECT_GE(distinct, 8);
}

TEST(ShapesDataset, RejectsBadArguments) {
  EXPECT_THROW(lorq::generate_shape_sample(1, -1), lorq::Error);
  EXPECT_THROW(lorq::generate_shape_sample(1, 0, 8), lorq::Error);
  lorq::ShapesDatasetSpec spec;
  spec.count = 0;
  EXPECT_THROW(lorq::write_shapes_dataset(testing::TempDir() + "/lorq_shapes_bad", spec), lorq::Error);
}

TEST(ShapesDataset, WritesDataset) {
  const fs::path dir = fs::path(testing::TempDir()) / "lorq_shapes_dataset_test" / "nested";
  fs::remove_all(dir.parent_path());
  lorq::ShapesDatasetSpec spec;
  spec.count = 20;
  spec.seed = 11;
  spec.size = 48;
  lorq::write_shapes_dataset(dir.string(), spec);

  size_t images = 0, masks = 0;
  for (const auto& e : fs::directory_iterator(dir / "images")) images += e.path().extension() == ".png";
  for (const auto& e : fs::directory_iterator(dir / "masks")) masks += e.path().extension() == ".png";
  EXPECT_EQ(images, 20u);
  EXPECT_EQ(masks, 20u);
  EXPECT_FALSE(fs::exists(dir / "labels.csv.tmp"));

  std::ifstream csv(dir / "labels.csv");
  ASSERT_TRUE(csv);
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "file,class_index,class_name,box_x,box_y,box_w,box_h");
  int64_t rows = 0;
  while (std::getline(csv, line)) {
    const std::vector<std::string> f = split_csv(line);
    ASSERT_EQ(f.size(), 7u) << line;
    const int cls = std::stoi(f[1]);
    EXPECT_EQ(cls, rows % 6);
    EXPECT_EQ(f[2], lorq::shape_class_names()[static_cast<size_t>(cls)]);
    const cv::Rect box(std::stoi(f[3]), std::stoi(f[4]), std::stoi(f[5]), std::stoi(f[6]));

    const cv::Mat image = cv::imread((dir / "images" / f[0]).string(), cv::IMREAD_UNCHANGED);
    const cv::Mat mask = cv::imread((dir / "masks" / f[0]).string(), cv::IMREAD_UNCHANGED);
    ASSERT_FALSE(image.empty()) << f[0];
    ASSERT_FALSE(mask.empty()) << f[0];
    EXPECT_EQ(image.type(), CV_8UC3);
    EXPECT_EQ(mask.type(), CV_8UC1);
    EXPECT_EQ(image.size(), cv::Size(48, 48));
    EXPECT_EQ(box, cv::boundingRect(mask));

    // The files hold exactly the generated sample (PNG is lossless).
    const lorq::ShapeSample s = lorq::generate_shape_sample(11, rows, 48);
    EXPECT_TRUE(same_bytes(image, s.image)) << f[0];
    EXPECT_TRUE(same_bytes(mask, s.mask)) << f[0];
    ++rows;
  }
  EXPECT_EQ(rows, 20);

  // Writing again over an existing directory works and gives the same labels.
  std::stringstream first;
  first << std::ifstream(dir / "labels.csv").rdbuf();
  lorq::write_shapes_dataset(dir.string(), spec);
  std::stringstream second;
  second << std::ifstream(dir / "labels.csv").rdbuf();
  EXPECT_EQ(first.str(), second.str());

  fs::remove_all(dir.parent_path());
}

}  // namespace
