#pragma once
// Semantic segmentation metrics from a confusion matrix accumulated over label maps:
//  - per-class IoU = TP / (TP + FP + FN);
//  - mIoU = the mean IoU over the classes present in the prediction or the ground truth (TP + FP + FN > 0); classes
//    absent from both are left out (not counted as 0 or 1);
//  - pixel accuracy = correct pixels / counted pixels.
// Pixels whose ground truth is the ignore index (255 by default, as ADE20K/Cityscapes label maps use) are not
// counted at all, whatever the prediction there.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lorq {

class ConfusionMatrix {
 public:
  explicit ConfusionMatrix(int num_classes, int64_t ignore_index = 255);

  // One image (or a batch): prediction and ground truth of the same shape, integer tensors (uint8, int32 or int64).
  // Throws lorq::Error when the shapes differ, a tensor is not an integer one, or a class is outside
  // 0..num_classes-1 (ground truth: other than the ignore index), naming the value.
  void add(const at::Tensor& prediction, const at::Tensor& truth);

  int num_classes() const { return num_classes_; }
  int64_t ignore_index() const { return ignore_index_; }
  // counts[t · num_classes + p]: pixels of true class t predicted as p.
  const std::vector<int64_t>& counts() const { return counts_; }
  int64_t count(int truth_class, int predicted_class) const;
  int64_t pixels() const;  // counted pixels (ground truth not ignored)
  int64_t ignored_pixels() const { return ignored_; }

  // IoU per class; NaN for a class absent from both prediction and ground truth.
  std::vector<double> class_iou() const;
  // NaN when no class is present (nothing counted).
  double mean_iou() const;
  double pixel_accuracy() const;

 private:
  int num_classes_;
  int64_t ignore_index_;
  int64_t ignored_ = 0;
  std::vector<int64_t> counts_;
};

}  // namespace lorq
