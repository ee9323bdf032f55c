#include "lorq/demo/detection_loss.h"

#include <ATen/ATen.h>

#include <string>

#include "lorq/common/box_ops.h"
#include "lorq/common/error.h"
#include "lorq/common/hungarian.h"

namespace lorq {

namespace {

void check_inputs(const at::Tensor& logits, const at::Tensor& boxes, const std::vector<DetectionTarget>& targets,
                  const DetectionLossWeights& w) {
  if (logits.dim() != 3 || boxes.dim() != 3 || boxes.size(2) != 4 || logits.size(0) != boxes.size(0) ||
      logits.size(1) != boxes.size(1)) {
    throw Error("detection loss: expected logits [B, Q, K+1] and boxes [B, Q, 4]");
  }
  if (static_cast<int64_t>(targets.size()) != logits.size(0)) {
    throw Error("detection loss: " + std::to_string(targets.size()) + " targets for a batch of " +
                std::to_string(logits.size(0)));
  }
  const int64_t classes = logits.size(2) - 1;
  if (w.anchor_cost > 0 &&
      (!w.anchors.defined() || w.anchors.dim() != 2 || w.anchors.size(0) != logits.size(1) || w.anchors.size(1) != 2))
    throw Error("detection loss: an anchor cost needs anchors [" + std::to_string(logits.size(1)) + ", 2]");
  for (size_t i = 0; i < targets.size(); ++i) {
    const DetectionTarget& t = targets[i];
    const std::string where = "detection loss: target " + std::to_string(i);
    if (!t.labels.defined() || !t.boxes.defined() || t.labels.dim() != 1 || t.boxes.dim() != 2 ||
        t.boxes.size(1) != 4 || t.boxes.size(0) != t.labels.size(0)) {
      throw Error(where + " needs labels [n] and boxes [n, 4]");
    }
    if (t.labels.numel() > 0 && (t.labels.min().item<int64_t>() < 0 || t.labels.max().item<int64_t>() >= classes)) {
      throw Error(where + " has a class outside 0.." + std::to_string(classes - 1));
    }
  }
}

}  // namespace

std::vector<std::vector<int64_t>> match_queries(const at::Tensor& logits, const at::Tensor& boxes,
                                                const std::vector<DetectionTarget>& targets,
                                                const DetectionLossWeights& w) {
  check_inputs(logits, boxes, targets, w);
  at::NoGradGuard no_grad;
  const at::Tensor prob = logits.detach().to(at::kDouble).softmax(-1);
  const at::Tensor pred = boxes.detach().to(at::kDouble);
  std::vector<std::vector<int64_t>> matches;
  for (size_t i = 0; i < targets.size(); ++i) {
    const int64_t q = logits.size(1), n = targets[i].labels.size(0);
    if (n == 0) {
      matches.emplace_back(static_cast<size_t>(q), -1);
      continue;
    }
    const at::Tensor tb = targets[i].boxes.to(at::kDouble);
    const at::Tensor p = pred[static_cast<int64_t>(i)];
    at::Tensor cost = w.bbox_cost * at::cdist(p, tb, 1.0) -
                      w.class_cost * prob[static_cast<int64_t>(i)].index_select(1, targets[i].labels) -
                      w.giou_cost * generalized_box_iou_cxcywh(p, tb);
    if (w.anchor_cost > 0) cost = cost + w.anchor_cost * at::cdist(w.anchors.to(at::kDouble), tb.narrow(1, 0, 2), 1.0);
    cost = cost.contiguous();
    const double* c = cost.data_ptr<double>();
    matches.push_back(min_cost_assignment(std::vector<double>(c, c + q * n), q, n));
  }
  return matches;
}

DetectionLoss detection_loss(const at::Tensor& logits, const at::Tensor& boxes,
                             const std::vector<DetectionTarget>& targets, const DetectionLossWeights& w) {
  DetectionLoss r;
  r.matches = match_queries(logits, boxes, targets, w);
  const int64_t batch = logits.size(0), queries = logits.size(1), no_object = logits.size(2) - 1;

  // Classification: every query has a target class, "no object" unless matched.
  std::vector<int64_t> target_classes(static_cast<size_t>(batch * queries), no_object);
  std::vector<int64_t> pred_index, target_image, target_index;
  int64_t num_boxes = 0;
  for (int64_t i = 0; i < batch; ++i) {
    const at::Tensor labels = targets[static_cast<size_t>(i)].labels.to(at::kLong).contiguous();
    const int64_t* l = labels.data_ptr<int64_t>();
    num_boxes += labels.size(0);
    for (int64_t q = 0; q < queries; ++q) {
      const int64_t t = r.matches[static_cast<size_t>(i)][static_cast<size_t>(q)];
      if (t < 0) continue;
      target_classes[static_cast<size_t>(i * queries + q)] = l[t];
      pred_index.push_back(i * queries + q);
      target_image.push_back(i);
      target_index.push_back(t);
    }
  }
  at::Tensor class_weight = at::ones({no_object + 1}, logits.options());
  class_weight[no_object] = w.eos_coef;
  r.ce = at::cross_entropy_loss(logits.reshape({batch * queries, no_object + 1}), at::tensor(target_classes, at::kLong),
                                class_weight);

  // Boxes: the matched pairs only, normalised by the number of ground-truth objects.
  const double norm = static_cast<double>(std::max<int64_t>(1, num_boxes));
  if (pred_index.empty()) {
    r.l1 = r.giou = (boxes.sum() * 0.0);  // keeps the graph (and the dtype) without a contribution
  } else {
    const at::Tensor matched = boxes.reshape({batch * queries, 4}).index_select(0, at::tensor(pred_index, at::kLong));
    std::vector<at::Tensor> rows;
    for (size_t k = 0; k < target_index.size(); ++k) {
      rows.push_back(targets[static_cast<size_t>(target_image[k])].boxes[target_index[k]]);
    }
    const at::Tensor wanted = at::stack(rows).to(boxes.dtype());
    r.l1 = (matched - wanted).abs().sum() / norm;
    r.giou = (1 - generalized_box_iou_cxcywh(matched, wanted).diagonal()).sum() / norm;
  }
  r.total = w.ce_weight * r.ce + w.l1_weight * r.l1 + w.giou_weight * r.giou;
  return r;
}

}  // namespace lorq
