// YOLO label files, PNG label maps and the dataset layouts: good files (coco8 from ../shared included), blank
// files, and malformed ones that must fail naming the file, the line and the problem.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>

#include "lorq/common/error.h"
#include "lorq/io/annotations.h"
#include "shared_data.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("lorq-annotations-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name, const std::string& text) const {
    const std::string p = (path_ / name).string();
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

// The message of the lorq::Error that `f` throws ("" if none).
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(YoloLabels, ReadsLinesAndSkipsBlankOnes) {
  TempDir dir;
  const std::string p = dir.file("a.txt", "3 0.5 0.25 0.2 0.1\r\n\n  \n0 1 0 0 0.75\n");
  const std::vector<YoloBox> b = read_yolo_labels(p);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].class_index, 3);
  EXPECT_EQ(b[0].cx, 0.5);
  EXPECT_EQ(b[0].cy, 0.25);
  EXPECT_EQ(b[0].w, 0.2);
  EXPECT_EQ(b[0].h, 0.1);
  EXPECT_EQ(b[1].class_index, 0);
  EXPECT_EQ(b[1].cx, 1.0);
  EXPECT_EQ(b[1].w, 0.0);  // zero-sized, accepted as Ultralytics does
  EXPECT_TRUE(read_yolo_labels(dir.file("empty.txt", "")).empty());
  EXPECT_TRUE(read_yolo_labels(dir.file("blank.txt", "\n \n")).empty());
  EXPECT_EQ(read_yolo_labels(dir.file("noeol.txt", "1 0.5 0.5 0.5 0.5")).size(), 1u);
  EXPECT_EQ(read_yolo_labels(dir.file("plus.txt", "+1 +5e-1 0.5 1E-2 0.5")).at(0).w, 0.01);
}

TEST(YoloLabels, RejectsMalformedLinesNamingFileAndLine) {
  TempDir dir;
  struct Case {
    std::string text, expect;
  };
  const std::vector<Case> cases{
      {"0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1\n", "line 2: expected 5 fields"},
      {"0 0.5 0.5 0.1 0.1 0.2\n", "expected 5 fields `class cx cy w h`, found 6"},
      {"0 0.1 0.1 0.2 0.1 0.2 0.2\n", "polygon segment labels are not supported"},
      {"0 nan 0.5 0.1 0.1\n", "line 1: cx 'nan' is not a finite number"},
      {"0 0.5 inf 0.1 0.1\n", "cy 'inf' is not a finite number"},
      {"0 0.5 0.5 1.5 0.1\n", "w 1.5 is outside 0..1"},
      {"0 0.5 0.5 0.1 -0.1\n", "h -0.1 is outside 0..1"},
      {"-1 0.5 0.5 0.1 0.1\n", "class '-1' is not a non-negative integer"},
      {"2.5 0.5 0.5 0.1 0.1\n", "class '2.5' is not a non-negative integer"},
      {"cat 0.5 0.5 0.1 0.1\n", "class 'cat' is not a finite number"},
      {"0 0,5 0.5 0.1 0.1\n", "cx '0,5' is not a finite number"},
      {"0 +-0.5 0.5 0.1 0.1\n", "cx '+-0.5' is not a finite number"},
      {"0 + 0.5 0.1 0.1\n", "cx '+' is not a finite number"},
      {"\n\n1 0.5 0.5x 0.1 0.1\n", "line 3: cy '0.5x'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string p = dir.file("bad" + std::to_string(i) + ".txt", cases[i].text);
    const std::string msg = error_of([&] { read_yolo_labels(p); });
    EXPECT_NE(msg.find(p + ": "), std::string::npos) << msg;
    EXPECT_NE(msg.find(cases[i].expect), std::string::npos) << "case " << i << ": " << msg;
  }
  const std::string p = dir.file("range.txt", "0 0.5 0.5 0.1 0.1\n6 0.5 0.5 0.1 0.1\n");
  EXPECT_EQ(read_yolo_labels(p, 7).size(), 2u);
  EXPECT_NE(error_of([&] { read_yolo_labels(p, 6); }).find("line 2: class 6 is beyond the 6 classes"),
            std::string::npos);
  EXPECT_NE(error_of([&] { read_yolo_labels(dir.path("missing.txt")); }).find("missing.txt: no such label file"),
            std::string::npos);
}

TEST(YoloLabels, ReadsCoco8) {
  const std::string images = testdata::shared_path("datasets/coco8/images/val");
  LORQ_REQUIRE_SHARED_FILE(images);
  int files = 0;
  size_t boxes = 0;
  for (const auto& e : fs::directory_iterator(images)) {
    const std::string txt = yolo_label_path(e.path().string());
    ASSERT_TRUE(fs::exists(txt)) << txt;
    boxes += read_yolo_labels(txt, 80).size();
    ++files;
  }
  EXPECT_EQ(files, 4);
  EXPECT_GT(boxes, 4u);
  // The first object of 000000000036: `25 0.475759 0.414523 0.951518 0.672422` (an umbrella).
  const std::vector<YoloBox> b = read_yolo_labels(yolo_label_path(images + "/000000000036.jpg"));
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].class_index, 25);
  EXPECT_DOUBLE_EQ(b[0].cx, 0.475759);
  EXPECT_DOUBLE_EQ(b[0].h, 0.672422);
}

TEST(LabelMap, ReadsEightBitGray) {
  TempDir dir;
  cv::Mat m(3, 5, CV_8UC1);
  for (int y = 0; y < 3; ++y)
    for (int x = 0; x < 5; ++x) m.at<uint8_t>(y, x) = static_cast<uint8_t>(y == 2 && x == 4 ? 255 : y * 5 + x);
  const std::string p = dir.path("map.png");
  ASSERT_TRUE(cv::imwrite(p, m));
  const at::Tensor t = read_label_map(p);
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{3, 5}));
  ASSERT_EQ(t.scalar_type(), at::kByte);
  EXPECT_EQ(t[0][3].item<int>(), 3);
  EXPECT_EQ(t[1][0].item<int>(), 5);
  EXPECT_EQ(t[2][4].item<int>(), 255);
}

TEST(LabelMap, RejectsColourDeepAndBrokenFiles) {
  TempDir dir;
  const std::string colour = dir.path("colour.png"), deep = dir.path("deep.png");
  ASSERT_TRUE(cv::imwrite(colour, cv::Mat(4, 4, CV_8UC3, cv::Scalar(1, 2, 3))));
  ASSERT_TRUE(cv::imwrite(deep, cv::Mat(4, 4, CV_16UC1, cv::Scalar(300))));
  std::string msg = error_of([&] { read_label_map(colour); });
  EXPECT_NE(msg.find(colour + ": a label map must be 8-bit with one channel"), std::string::npos) << msg;
  EXPECT_NE(msg.find("8-bit with 3 channels"), std::string::npos) << msg;
  msg = error_of([&] { read_label_map(deep); });
  EXPECT_NE(msg.find("16-bit with 1 channels"), std::string::npos) << msg;
  const std::string junk = dir.file("junk.png", "not a png");
  EXPECT_NE(error_of([&] { read_label_map(junk); }).find(junk + ": cannot decode"), std::string::npos);
  EXPECT_NE(error_of([&] { read_label_map(dir.path("none.png")); }).find("no such label map"), std::string::npos);
}

TEST(DatasetLayout, LabelPathsFollowTheImagesFolder) {
  EXPECT_EQ(yolo_label_path("/d/coco8/images/val/000000000036.jpg"), "/d/coco8/labels/val/000000000036.txt");
  EXPECT_EQ(yolo_label_path("images/a.b.JPEG"), "labels/a.b.txt");
  // The last `images` folder is the one that changes.
  EXPECT_EQ(yolo_label_path("/images/set/images/x.png"), "/images/set/labels/x.txt");
  // A file named "images" is not a folder; no `images` folder: the .txt beside the image (Ultralytics).
  EXPECT_EQ(yolo_label_path("/d/photos/images"), "/d/photos/images.txt");
  EXPECT_EQ(yolo_label_path("/d/photos/x.jpg"), "/d/photos/x.txt");
  EXPECT_EQ(segmentation_label_path("/ade/images/training/ADE_train_1.jpg"),
            "/ade/annotations/training/ADE_train_1.png");
  EXPECT_EQ(segmentation_label_path("/d/images/x.jpg"), "/d/annotations/x.png");
  EXPECT_NE(error_of([] { segmentation_label_path("/d/photos/x.jpg"); }).find("/d/photos/x.jpg: is not inside"),
            std::string::npos);
}
