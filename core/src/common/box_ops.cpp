#include "lorq/common/box_ops.h"

#include <ATen/ATen.h>

#include "lorq/common/error.h"

namespace lorq {

namespace {

constexpr double kTinyArea = 1e-12;

void check_boxes(const at::Tensor& t, const char* what) {
  if (!t.defined() || t.dim() != 2 || t.size(1) != 4) {
    throw Error(std::string("box operations: ") + what + " must be an [N, 4] tensor");
  }
}

at::Tensor area(const at::Tensor& b) {  // [N]
  return (b.select(1, 2) - b.select(1, 0)).clamp_min(0) * (b.select(1, 3) - b.select(1, 1)).clamp_min(0);
}

struct Overlap {
  at::Tensor inter, uni;  // [N, M]
};

Overlap overlap(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor lt = at::max(a.slice(1, 0, 2).unsqueeze(1), b.slice(1, 0, 2).unsqueeze(0));  // [N, M, 2]
  const at::Tensor rb = at::min(a.slice(1, 2, 4).unsqueeze(1), b.slice(1, 2, 4).unsqueeze(0));
  const at::Tensor wh = (rb - lt).clamp_min(0);
  Overlap o;
  o.inter = wh.select(2, 0) * wh.select(2, 1);
  o.uni = (area(a).unsqueeze(1) + area(b).unsqueeze(0) - o.inter).clamp_min(kTinyArea);
  return o;
}

}  // namespace

at::Tensor box_cxcywh_to_xyxy(const at::Tensor& b) {
  const at::Tensor c = b.narrow(-1, 0, 2), half = b.narrow(-1, 2, 2) * 0.5;
  return at::cat({c - half, c + half}, -1);
}

at::Tensor box_xyxy_to_cxcywh(const at::Tensor& b) {
  const at::Tensor p0 = b.narrow(-1, 0, 2), p1 = b.narrow(-1, 2, 2);
  return at::cat({(p0 + p1) * 0.5, p1 - p0}, -1);
}

at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b) {
  check_boxes(a, "the first boxes");
  check_boxes(b, "the second boxes");
  const Overlap o = overlap(a, b);
  return o.inter / o.uni;
}

at::Tensor generalized_box_iou(const at::Tensor& a, const at::Tensor& b) {
  check_boxes(a, "the first boxes");
  check_boxes(b, "the second boxes");
  const Overlap o = overlap(a, b);
  const at::Tensor lt = at::min(a.slice(1, 0, 2).unsqueeze(1), b.slice(1, 0, 2).unsqueeze(0));
  const at::Tensor rb = at::max(a.slice(1, 2, 4).unsqueeze(1), b.slice(1, 2, 4).unsqueeze(0));
  const at::Tensor wh = (rb - lt).clamp_min(0);
  const at::Tensor enclosing = (wh.select(2, 0) * wh.select(2, 1)).clamp_min(kTinyArea);
  return o.inter / o.uni - (enclosing - o.uni) / enclosing;
}

at::Tensor generalized_box_iou_cxcywh(const at::Tensor& a, const at::Tensor& b) {
  check_boxes(a, "the first boxes");
  check_boxes(b, "the second boxes");
  return generalized_box_iou(box_cxcywh_to_xyxy(a), box_cxcywh_to_xyxy(b));
}

}  // namespace lorq
