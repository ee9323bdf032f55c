#include "lorq/tasks/detection_post.h"

#include <ATen/ATen.h>

#include <string>

#include "lorq/common/error.h"

namespace lorq {

std::vector<DetectedBox> post_process_object_detection(const at::Tensor& logits, const at::Tensor& pred_boxes,
                                                       int64_t orig_h, int64_t orig_w, double threshold) {
  if (logits.dim() != 2 || logits.size(1) < 2)
    throw Error("detection post-processing: logits must be [tokens, classes + 1], got " +
                std::string(c10::str(logits.sizes())));
  if (pred_boxes.dim() != 2 || pred_boxes.size(1) != 4 || pred_boxes.size(0) != logits.size(0))
    throw Error("detection post-processing: boxes must be [" + std::to_string(logits.size(0)) + ", 4], got " +
                std::string(c10::str(pred_boxes.sizes())));
  if (orig_h < 1 || orig_w < 1)
    throw Error("detection post-processing: the image size " + std::to_string(orig_h) + "x" + std::to_string(orig_w) +
                " is empty");
  const at::Tensor prob = at::softmax(logits.to(at::kFloat), -1);
  const auto [scores_t, labels_t] = prob.narrow(1, 0, logits.size(1) - 1).max(-1);
  const at::Tensor scores = scores_t.contiguous(), labels = labels_t.contiguous();
  const at::Tensor boxes = pred_boxes.to(at::kFloat).contiguous();
  const float* s = scores.data_ptr<float>();
  const int64_t* l = labels.data_ptr<int64_t>();
  const float* b = boxes.data_ptr<float>();
  // torch's (int64 target size) * float32 box promotes the size to float32.
  const float w = static_cast<float>(orig_w), h = static_cast<float>(orig_h);
  const float keep_above = static_cast<float>(threshold);
  std::vector<DetectedBox> out;
  for (int64_t q = 0; q < scores.size(0); ++q) {
    if (!(s[q] > keep_above)) continue;
    const float cx = b[q * 4], cy = b[q * 4 + 1], bw = b[q * 4 + 2], bh = b[q * 4 + 3];
    DetectedBox d;
    d.class_index = static_cast<int>(l[q]);
    d.score = s[q];
    // center_to_corners_format: each corner rounded to float32 before the scaling, as in the Python.
    d.x0 = static_cast<float>(cx - 0.5f * bw) * w;
    d.y0 = static_cast<float>(cy - 0.5f * bh) * h;
    d.x1 = static_cast<float>(cx + 0.5f * bw) * w;
    d.y1 = static_cast<float>(cy + 0.5f * bh) * h;
    out.push_back(d);
  }
  return out;
}

}  // namespace lorq
