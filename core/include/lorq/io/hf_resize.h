#pragma once
// The Hugging Face image processors' default (torchvision) resize and normalisation, bit for bit:
//  - hf_resize_bilinear: antialiased bilinear resize of a uint8 image in integer arithmetic, as
//    torch.nn.functional.interpolate(uint8, mode="bilinear", antialias=True, align_corners=False) computes it
//    (Pillow's two-pass algorithm with int16 weights at an adaptive precision; ../shared/models/HF_GOLDENS.md,
//    "Preprocessing, bit for bit", step 2). A float resize or Pillow's own 22-bit weights differ from it by one grey
//    level at a few percent of the pixels, which moves a model's outputs past the golden tolerances.
//  - yolos_resize_size: YolosImageProcessor's output size (get_size_with_aspect_ratio_yolos, then both sides
//    floored to a multiple of 16).
//  - hf_normalize: rescale and normalise in one float32 step.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace lorq {

// The integer filter of one axis (in -> out samples): output i is
//   clamp((2^(precision-1) + Σ_k input[first[i] + k] · weights[i·taps + k]) >> precision, 0, 255), k < count[i].
struct AaAxisFilter {
  int64_t in_size = 0, out_size = 0;
  int64_t taps = 0;              // weights per output sample (ceil(support)·2 + 1)
  int precision = 0;             // bits of the fixed-point weights
  std::vector<int64_t> first;    // [out] first input sample
  std::vector<int64_t> count;    // [out] input samples used (<= taps)
  std::vector<int16_t> weights;  // [out · taps], zero past count[i]
};
AaAxisFilter hf_bilinear_axis_filter(int64_t in_size, int64_t out_size);

// uint8 [H, W, C] (any C >= 1) -> uint8 [out_h, out_w, C]. The horizontal pass runs first into a rounded uint8
// image, then the vertical one; an axis whose size does not change is skipped. Throws lorq::Error for another
// dtype or shape, or a size below 1.
at::Tensor hf_resize_bilinear(const at::Tensor& image, int64_t out_h, int64_t out_w);

// YolosImageProcessor's size for an h x w image: {out_h, out_w}. `longest_edge` <= 0 means no cap; `mod` <= 0 means
// no flooring. Python's round() (half to even) and int() (truncation) are reproduced.
std::pair<int64_t, int64_t> yolos_resize_size(int64_t h, int64_t w, int64_t shortest_edge = 800,
                                              int64_t longest_edge = 1333, int64_t mod = 16);

// uint8 [H, W, 3] -> float [3, H, W]: (float(x) - 255·mean) / (255·std), with 255·mean and 255·std rounded to
// float32 first (the processors' fused rescale + normalise).
at::Tensor hf_normalize(const at::Tensor& image, const std::array<float, 3>& mean, const std::array<float, 3>& std);

}  // namespace lorq
