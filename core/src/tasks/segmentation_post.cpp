#include "lorq/tasks/segmentation_post.h"

#include <ATen/ATen.h>

#include "lorq/common/error.h"

namespace lorq {

at::Tensor segmentation_label_map(const at::Tensor& logits, int64_t target_h, int64_t target_w) {
  if (!logits.defined() || (logits.dim() != 3 && logits.dim() != 4) || logits.size(-3) < 1)
    throw Error("segmentation_label_map: expected logits [B, classes, h, w] or [classes, h, w]");
  if (target_h < 1 || target_w < 1)
    throw Error("segmentation_label_map: the target size must be positive, got " + std::to_string(target_h) + "x" +
                std::to_string(target_w));
  const bool single = logits.dim() == 3;
  at::Tensor x = single ? logits.unsqueeze(0) : logits;
  x = x.to(at::kFloat);
  // HF calls F.interpolate(size=...), which leaves the scales to be derived from the sizes (no scale_factor).
  if (x.size(2) != target_h || x.size(3) != target_w)
    x = at::upsample_bilinear2d(x, {target_h, target_w}, /*align_corners=*/false);
  at::Tensor labels = x.argmax(1);
  return single ? labels.squeeze(0) : labels;
}

}  // namespace lorq
