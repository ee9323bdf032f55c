#pragma once
// Box arithmetic on tensors, differentiable (training losses use it): conversions, pairwise IoU and generalised IoU
// (Rezatofighi et al. 2019) as DETR defines them. Boxes are [N, 4] float tensors, either (x0, y0, x1, y1) corners or
// (cx, cy, w, h); any unit, as long as both operands share it.
#include <ATen/core/Tensor.h>

namespace lorq {

at::Tensor box_cxcywh_to_xyxy(const at::Tensor& boxes);  // [..., 4] -> [..., 4]
at::Tensor box_xyxy_to_cxcywh(const at::Tensor& boxes);  // [..., 4] -> [..., 4]

// Pairwise IoU of corner boxes a [N, 4] and b [M, 4] -> [N, M]. Empty or inverted boxes have area 0; a pair whose
// union is empty gets IoU 0 (the union is clamped to a tiny positive value so gradients stay finite).
at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b);
// Pairwise generalised IoU of corner boxes a [N, 4] and b [M, 4] -> [N, M], in [-1, 1]:
// IoU - (enclosing area - union) / enclosing area.
at::Tensor generalized_box_iou(const at::Tensor& a, const at::Tensor& b);
// The same for boxes given as (cx, cy, w, h).
at::Tensor generalized_box_iou_cxcywh(const at::Tensor& a, const at::Tensor& b);

}  // namespace lorq
