#pragma once
// Augmented views of preprocessed images for adaptive rounding (spec §3, fine-tuning set): random resized crops and
// horizontal flips, taken from the already normalized [N, C, H, W] tensor so that any model's preprocessing works.
// The rounding loss of a transformer's readout token (DeiT's class token) has one row per image: with 128 images
// it fits a 768-wide layer on 128 rows. Each view adds one more row per image, from a different crop of it.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <random>
#include <vector>

namespace lorq {

struct AugmentSettings {
  double scale_min = 0.25, scale_max = 1.0;         // crop area over image area (timm's training transform: 0.08-1)
  double ratio_min = 3.0 / 4, ratio_max = 4.0 / 3;  // crop width over height
  double flip = 0.5;                                // probability of a horizontal flip
};

// One crop of an H×W image: rows top..top+height−1, columns left..left+width−1, then flipped left-right or not.
struct CropBox {
  int64_t top = 0, left = 0, height = 0, width = 0;
  bool flip = false;
};

// Draws one crop box like torchvision's RandomResizedCrop.get_params (10 tries at a random area and log-uniform
// aspect ratio, else the centred crop of the nearest allowed ratio), from the generator's next numbers.
CropBox random_crop_box(int64_t H, int64_t W, const AugmentSettings& s, std::mt19937_64& rng);

// The crop of one [C, H, W] image resized back to H×W (bilinear, half-pixel centres, like
// torch.nn.functional.interpolate(align_corners=False)), flipped when the box says so.
at::Tensor crop_and_resize(const at::Tensor& image, const CropBox& box);

// The images followed by `views` augmented copies of each: [N·(1+views), C, H, W], the copies view-major (all
// images' first view, then all second views), drawn from `seed` (the same seed gives the same views).
at::Tensor with_augmented_views(const at::Tensor& images, int views, uint64_t seed, const AugmentSettings& s = {});

// The crop boxes with_augmented_views draws for N images of H×W: [view][image].
std::vector<std::vector<CropBox>> augmented_view_boxes(int64_t N, int64_t H, int64_t W, int views, uint64_t seed,
                                                       const AugmentSettings& s = {});

}  // namespace lorq
