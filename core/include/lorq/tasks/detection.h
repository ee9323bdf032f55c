#pragma once
// Object detection (DETR-style set prediction: YOLOS): outputs "logits" [B, Q, K+1] (the last class is "no object")
// and "boxes" [B, Q, 4] (cx, cy, w, h relative to the model input, after the sigmoid).
//
// Global error: the task's two outputs, each as its own noise-to-signal ratio, weighed 1:1. Normalising each output by
// its own signal makes the sum unit-free: class logits (O(1..10)) and boxes (in [0, 1], a few hundredths of change
// matters) would otherwise be compared at scales two orders apart, and whichever output is larger would decide every
// allocation. With both ratios, a layer that moves the boxes by 1 % of their magnitude costs as much as one that moves
// the class scores by 1 %, which is what the mAP feels (a box off by a few percent loses the high-IoU thresholds, a
// flipped class loses the detection).
//
// Metric: COCO box mAP@[.5:.95] and mAP@.5 over every detection token (threshold 0, as COCO evaluation keeps the top
// 100), ground truth from the image set (YOLO label files or a labels.csv with boxes).
#include <ATen/core/Tensor.h>

#include <vector>

#include "lorq/io/images.h"
#include "lorq/tasks/detection_match.h"
#include "lorq/tasks/task.h"

namespace lorq {

class DetectionTask : public Task {
 public:
  TaskKind kind() const override { return TaskKind::Detection; }
  std::vector<std::pair<std::string, double>> error_outputs() const override {
    return {{"logits", 1.0}, {"boxes", 1.0}};
  }
  std::unique_ptr<MetricAccumulator> new_metric() const override;
  // Float detections above the default threshold matched greedily (by score) to compressed ones of the same class at
  // IoU >= 0.5 (geometry-free: both in input-relative coordinates); score = lost + new + Σ (1 − IoU) of the matched.
  OutputChange output_change(const ModelOutputs& float_row, const ModelOutputs& compressed_row) const override;

  static constexpr double kDefaultThreshold = 0.5;  // post_process_object_detection's default
};

// One image's detections in its original pixels: row `row` of a batch whose input tensor was `input_h` x `input_w`
// (padded), the image resized to `geometry.input_h` x `geometry.input_w` inside it. threshold 0 keeps every token in
// token order (Hugging Face's post-processing).
std::vector<Detection> detections_of(const ModelOutputs& outputs, int64_t row, int64_t input_h, int64_t input_w,
                                     const ImageGeometry& geometry, double threshold, const Model* model = nullptr);

}  // namespace lorq
