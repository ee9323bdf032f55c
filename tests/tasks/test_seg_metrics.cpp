// The segmentation confusion matrix, mIoU and pixel accuracy on hand-computed label maps, including the ignore
// index and a class absent from both prediction and ground truth.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/tasks/seg_metrics.h"

using namespace lorq;

namespace {

at::Tensor map(std::vector<int64_t> v, int64_t h, int64_t w, at::ScalarType t = at::kLong) {
  return at::tensor(v).reshape({h, w}).to(t);
}

}  // namespace

TEST(ConfusionMatrix, HandComputedIouAndAccuracy) {
  // 4 classes; class 3 appears nowhere. Ground truth / prediction (2x4):
  //   truth  0 0 1 1      pred  0 1 1 1
  //          2 2 2 255          2 0 2 1
  // The 255 pixel is ignored. Counted (truth, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (2,2).
  // class 0: TP 1, FN 1, FP 1 -> 1/3; class 1: TP 2, FN 0, FP 1 -> 2/3; class 2: TP 2, FN 1, FP 0 -> 2/3;
  // class 3: absent -> left out. mIoU = (1/3 + 2/3 + 2/3) / 3 = 5/9; accuracy 5/7.
  ConfusionMatrix cm(4);
  cm.add(map({0, 1, 1, 1, 2, 0, 2, 1}, 2, 4), map({0, 0, 1, 1, 2, 2, 2, 255}, 2, 4, at::kByte));
  EXPECT_EQ(cm.pixels(), 7);
  EXPECT_EQ(cm.ignored_pixels(), 1);
  EXPECT_EQ(cm.count(0, 1), 1);
  EXPECT_EQ(cm.count(1, 1), 2);
  EXPECT_EQ(cm.count(2, 0), 1);
  const std::vector<double> iou = cm.class_iou();
  EXPECT_NEAR(iou[0], 1.0 / 3, 1e-15);
  EXPECT_NEAR(iou[1], 2.0 / 3, 1e-15);
  EXPECT_NEAR(iou[2], 2.0 / 3, 1e-15);
  EXPECT_TRUE(std::isnan(iou[3]));
  EXPECT_NEAR(cm.mean_iou(), 5.0 / 9, 1e-15);
  EXPECT_NEAR(cm.pixel_accuracy(), 5.0 / 7, 1e-15);
}

TEST(ConfusionMatrix, IgnoredPixelsDoNotCountWhateverIsPredicted) {
  // Every ground-truth pixel of the second row is ignored, and the prediction there is class 1, which appears
  // nowhere else: class 1 must stay absent (not an IoU of 0).
  ConfusionMatrix cm(3, 255);
  cm.add(map({0, 2, 1, 1}, 2, 2), map({0, 2, 255, 255}, 2, 2));
  EXPECT_TRUE(std::isnan(cm.class_iou()[1]));
  EXPECT_DOUBLE_EQ(cm.mean_iou(), 1.0);
  EXPECT_DOUBLE_EQ(cm.pixel_accuracy(), 1.0);
  // Another ignore index: -1 in int64 maps.
  ConfusionMatrix neg(2, -1);
  neg.add(map({1, 0, 0}, 1, 3), map({1, -1, 1}, 1, 3));
  EXPECT_EQ(neg.pixels(), 2);
  EXPECT_NEAR(neg.class_iou()[0], 0.0, 0);  // predicted once, never true: present with IoU 0
  EXPECT_NEAR(neg.class_iou()[1], 0.5, 1e-15);
  EXPECT_NEAR(neg.mean_iou(), 0.25, 1e-15);
}

TEST(ConfusionMatrix, AccumulatesOverImagesAsOneMatrix) {
  // IoU from the summed matrix, not the mean of per-image IoUs: image 1 class 0 perfect (4 px), image 2 class 0
  // half wrong (1 TP, 1 FN to class 1) -> class 0: 5 / 6; class 1: 0 / 1 (predicted once, never true).
  ConfusionMatrix cm(2);
  cm.add(map({0, 0, 0, 0}, 2, 2), map({0, 0, 0, 0}, 2, 2));
  cm.add(map({0, 1}, 1, 2, at::kInt), map({0, 0}, 1, 2, at::kInt));
  EXPECT_NEAR(cm.class_iou()[0], 5.0 / 6, 1e-15);
  EXPECT_EQ(cm.class_iou()[1], 0.0);
  EXPECT_NEAR(cm.mean_iou(), 5.0 / 12, 1e-15);
  EXPECT_NEAR(cm.pixel_accuracy(), 5.0 / 6, 1e-15);
  // Batched [B, H, W] maps are the same as adding each image.
  ConfusionMatrix batched(2);
  batched.add(map({0, 0, 0, 0, 0, 1}, 3, 2).reshape({1, 3, 2}), map({0, 0, 0, 0, 0, 0}, 3, 2).reshape({1, 3, 2}));
  EXPECT_EQ(batched.counts(), cm.counts());
}

TEST(ConfusionMatrix, NothingCountedGivesNoValue) {
  ConfusionMatrix cm(3);
  EXPECT_TRUE(std::isnan(cm.mean_iou()));
  EXPECT_TRUE(std::isnan(cm.pixel_accuracy()));
  cm.add(map({0, 1}, 1, 2), map({255, 255}, 1, 2));
  EXPECT_TRUE(std::isnan(cm.mean_iou()));
  EXPECT_EQ(cm.ignored_pixels(), 2);
}

TEST(ConfusionMatrix, RejectsBadInputAndLeavesTheMatrixAlone) {
  ConfusionMatrix cm(3);
  cm.add(map({0}, 1, 1), map({0}, 1, 1));
  EXPECT_THROW(cm.add(map({0, 1}, 1, 2), map({0, 3}, 1, 2)), Error);           // truth class 3 of 3 classes
  EXPECT_THROW(cm.add(map({0, 7}, 1, 2), map({0, 1}, 1, 2)), Error);           // predicted class 7
  EXPECT_THROW(cm.add(map({0, 1}, 1, 2), map({0, 1}, 2, 1)), Error);           // shapes differ
  EXPECT_THROW(cm.add(map({0}, 1, 1).to(at::kFloat), map({0}, 1, 1)), Error);  // not integers
  EXPECT_EQ(cm.pixels(), 1);
  EXPECT_THROW(ConfusionMatrix(0), Error);
  EXPECT_THROW(ConfusionMatrix(300, 255), Error);  // the ignore index would be a class
  try {
    cm.add(map({0, 1}, 1, 2), map({0, 3}, 1, 2));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class 3"), std::string::npos) << e.what();
  }
}
