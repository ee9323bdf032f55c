#pragma once
// The DETR set-prediction loss that trains the demo detector (as Hugging Face's YOLOS/DETR loss computes it):
// each image's object queries are matched one-to-one to its ground-truth objects by the Hungarian method on
//   cost = class_cost * (-p(target class)) + bbox_cost * L1(boxes) + giou_cost * (-GIoU(boxes)),
// then
//   loss = ce_weight * CE(all queries; unmatched ones target "no object", weighted eos_coef)
//        + l1_weight * sum L1(matched boxes) / N + giou_weight * sum (1 - GIoU(matched boxes)) / N,
// N = the number of ground-truth objects in the batch (at least 1).
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lorq {

struct DetectionTarget {
  at::Tensor labels;  // int64 [n], class indices 0..K-1
  at::Tensor boxes;   // float [n, 4], (cx, cy, w, h) normalised by the image size
};

struct DetectionLossWeights {  // Hugging Face's YolosConfig defaults
  double class_cost = 1, bbox_cost = 5, giou_cost = 2;
  double ce_weight = 1, l1_weight = 5, giou_weight = 2;
  double eos_coef = 0.1;  // weight of the "no object" class (the last logit) in the cross-entropy
  // Optional location prior in the matching cost: anchor_cost x L1 distance between an object's centre and the
  // centre of the image cell query q is responsible for (anchors [Q, 2], normalised x, y). At the start every query
  // predicts about the same box, so the plain cost matches objects to queries at random and each query is pulled
  // towards every class and place in turn (DETR's slow start); the prior makes the assignment stable from the
  // first step, so each query learns its region. Zero (the default) is Hugging Face's matcher.
  double anchor_cost = 0;
  at::Tensor anchors;
};

struct DetectionLoss {
  at::Tensor total, ce, l1, giou;  // scalars, differentiable
  // Per image, per query: the matched target's index, or -1.
  std::vector<std::vector<int64_t>> matches;
};

// logits [B, Q, K+1] (the last class is "no object"), boxes [B, Q, 4] (cx, cy, w, h), one target per image.
// Throws lorq::Error on mismatched shapes or a target class out of range.
std::vector<std::vector<int64_t>> match_queries(const at::Tensor& logits, const at::Tensor& boxes,
                                                const std::vector<DetectionTarget>& targets,
                                                const DetectionLossWeights& weights = {});
DetectionLoss detection_loss(const at::Tensor& logits, const at::Tensor& boxes,
                             const std::vector<DetectionTarget>& targets, const DetectionLossWeights& weights = {});

}  // namespace lorq
