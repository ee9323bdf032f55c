#pragma once
// Semantic segmentation (SegFormer): output "logits" [B, K, h, w] at a fraction of the input size.
//
// Global error: the logits' noise-to-signal ratio (one output). Metric: mIoU and pixel accuracy from a confusion
// matrix accumulated over the set, after Hugging Face's post_process_semantic_segmentation (bilinear upsampling of
// the logits to the original image size, argmax), ground truth from label-map PNGs (ignore index 255).
#include <ATen/core/Tensor.h>

#include "lorq/io/images.h"
#include "lorq/tasks/task.h"

namespace lorq {

class SegmentationTask : public Task {
 public:
  TaskKind kind() const override { return TaskKind::Segmentation; }
  std::vector<std::pair<std::string, double>> error_outputs() const override { return {{"logits", 1.0}}; }
  std::unique_ptr<MetricAccumulator> new_metric() const override;
  // score = the fraction of logit-grid pixels whose argmax class changed.
  OutputChange output_change(const ModelOutputs& float_row, const ModelOutputs& compressed_row) const override;

  static constexpr int kIgnoreIndex = 255;
};

// Row `row`'s label map at the original image size: the logits cropped to the resized image's share of the (padded)
// input, bilinearly upsampled (align_corners false) to geometry.image_h x image_w, argmax.
LabelMap label_map_of(const ModelOutputs& outputs, int64_t row, int64_t input_h, int64_t input_w,
                      const ImageGeometry& geometry);

}  // namespace lorq
