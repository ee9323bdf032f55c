#include "lorq/tasks/seg_metrics.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

namespace {

bool integer_type(at::ScalarType t) { return t == at::kByte || t == at::kInt || t == at::kLong; }

}  // namespace

ConfusionMatrix::ConfusionMatrix(int num_classes, int64_t ignore_index)
    : num_classes_(num_classes), ignore_index_(ignore_index) {
  if (num_classes < 1 || num_classes > (1 << 16))
    throw Error("segmentation metric: " + std::to_string(num_classes) + " classes is not a valid count");
  if (ignore_index >= 0 && ignore_index < num_classes)
    throw Error("segmentation metric: the ignore index " + std::to_string(ignore_index) + " is one of the " +
                std::to_string(num_classes) + " classes");
  counts_.assign(static_cast<size_t>(num_classes) * static_cast<size_t>(num_classes), 0);
}

void ConfusionMatrix::add(const at::Tensor& prediction, const at::Tensor& truth) {
  if (!integer_type(prediction.scalar_type()) || !integer_type(truth.scalar_type()))
    throw Error("segmentation metric: label maps must hold integer class indices (uint8, int32 or int64)");
  if (!prediction.sizes().equals(truth.sizes()))
    throw Error("segmentation metric: the prediction is " + std::string(c10::str(prediction.sizes())) +
                " but the ground truth is " + std::string(c10::str(truth.sizes())));
  // int64 copies keep one loop for every dtype; label maps are small next to a model's forward pass.
  const at::Tensor p = prediction.to(at::kLong).contiguous(), t = truth.to(at::kLong).contiguous();
  const int64_t* pp = p.data_ptr<int64_t>();
  const int64_t* tp = t.data_ptr<int64_t>();
  const int64_t n = p.numel(), k = num_classes_;
  // Validate first, so that a bad map leaves the matrix as it was.
  for (int64_t i = 0; i < n; ++i) {
    if (tp[i] == ignore_index_) continue;
    if (tp[i] < 0 || tp[i] >= k)
      throw Error("segmentation metric: the ground truth holds class " + std::to_string(tp[i]) + ", outside 0.." +
                  std::to_string(k - 1) + " (ignore index " + std::to_string(ignore_index_) + ")");
    if (pp[i] < 0 || pp[i] >= k)
      throw Error("segmentation metric: the prediction holds class " + std::to_string(pp[i]) + ", outside 0.." +
                  std::to_string(k - 1));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (tp[i] == ignore_index_) {
      ++ignored_;
    } else {
      ++counts_[static_cast<size_t>(tp[i] * k + pp[i])];
    }
  }
}

int64_t ConfusionMatrix::count(int truth_class, int predicted_class) const {
  if (truth_class < 0 || truth_class >= num_classes_ || predicted_class < 0 || predicted_class >= num_classes_)
    throw Error("segmentation metric: no class pair (" + std::to_string(truth_class) + ", " +
                std::to_string(predicted_class) + ")");
  return counts_[static_cast<size_t>(truth_class) * num_classes_ + predicted_class];
}

int64_t ConfusionMatrix::pixels() const {
  int64_t n = 0;
  for (int64_t c : counts_) n += c;
  return n;
}

std::vector<double> ConfusionMatrix::class_iou() const {
  const size_t k = static_cast<size_t>(num_classes_);
  std::vector<double> iou(k, std::numeric_limits<double>::quiet_NaN());
  for (size_t c = 0; c < k; ++c) {
    int64_t row = 0, col = 0;  // row: truth c (TP + FN); col: predicted c (TP + FP)
    for (size_t j = 0; j < k; ++j) {
      row += counts_[c * k + j];
      col += counts_[j * k + c];
    }
    const int64_t tp = counts_[c * k + c];
    const int64_t uni = row + col - tp;
    if (uni > 0) iou[c] = static_cast<double>(tp) / static_cast<double>(uni);
  }
  return iou;
}

double ConfusionMatrix::mean_iou() const {
  double sum = 0;
  int present = 0;
  for (double v : class_iou()) {
    if (std::isnan(v)) continue;
    sum += v;
    ++present;
  }
  return present ? sum / present : std::numeric_limits<double>::quiet_NaN();
}

double ConfusionMatrix::pixel_accuracy() const {
  const int64_t total = pixels();
  if (total == 0) return std::numeric_limits<double>::quiet_NaN();
  int64_t correct = 0;
  for (int c = 0; c < num_classes_; ++c) correct += counts_[static_cast<size_t>(c) * num_classes_ + c];
  return static_cast<double>(correct) / static_cast<double>(total);
}

}  // namespace lorq
