#pragma once
// YolosImageProcessor.post_process_object_detection (the DETR family's), for one image:
//   prob = softmax(logits) over all K+1 classes; score, label = max over the first K ("no object", the last
//   column, is dropped after the softmax, so it still takes its share of the probability);
//   boxes (cx, cy, w, h relative to the model input) -> corners (cx - w/2, cy - h/2, cx + w/2, cy + h/2), times
//   (W, H, W, H) of the original image, in float32;
//   keep the tokens with score > threshold, in token order (threshold 0 keeps every token).
// The boxes are relative to the model input, which holds the whole (unpadded) image, so they scale straight to the
// original image's pixels.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "lorq/tasks/box_map.h"

namespace lorq {

// logits [Q, K+1], pred_boxes [Q, 4] (float); orig_h x orig_w the image the boxes are reported in. The threshold is
// compared in float32, as torch compares a float tensor with a Python float. Throws lorq::Error for bad shapes.
std::vector<DetectedBox> post_process_object_detection(const at::Tensor& logits, const at::Tensor& pred_boxes,
                                                       int64_t orig_h, int64_t orig_w, double threshold = 0.5);

}  // namespace lorq
