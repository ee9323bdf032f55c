#pragma once
// Semantic segmentation post-processing as Hugging Face's SegformerImageProcessor.post_process_semantic_segmentation
// does it: the logits [B, K, h, w] are upsampled bilinearly (align_corners false) to the requested size, then each
// pixel takes the class of its largest logit. Label maps are reported at the original image size.
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace lorq {

// logits [B, K, h, w] (or [K, h, w] for one image) -> class indices int64 [B, target_h, target_w] (or
// [target_h, target_w]). Ties go to the lowest class index, as torch.argmax. Throws lorq::Error for a bad shape or
// a non-positive target size.
at::Tensor segmentation_label_map(const at::Tensor& logits, int64_t target_h, int64_t target_w);

}  // namespace lorq
