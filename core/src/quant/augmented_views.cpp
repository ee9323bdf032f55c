// Random resized crops and flips of normalized image tensors (see augmented_views.h).
#include "lorq/quant/augmented_views.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>

#include "lorq/common/error.h"

namespace lorq {

namespace {

// A double in [0, 1) from the top 53 bits: the same numbers on every platform (std's distributions are not).
double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

}  // namespace

CropBox random_crop_box(int64_t H, int64_t W, const AugmentSettings& s, std::mt19937_64& rng) {
  if (!(s.scale_min > 0 && s.scale_min <= s.scale_max && s.scale_max <= 1) ||
      !(s.ratio_min > 0 && s.ratio_min <= s.ratio_max) || !(s.flip >= 0 && s.flip <= 1))
    throw Error("augmentation: scale must be within (0, 1], ratio positive, flip a probability");
  CropBox box;
  const double area = static_cast<double>(H * W), log_lo = std::log(s.ratio_min), log_hi = std::log(s.ratio_max);
  bool found = false;
  for (int attempt = 0; attempt < 10 && !found; ++attempt) {
    const double target = area * (s.scale_min + (s.scale_max - s.scale_min) * uniform01(rng));
    const double ratio = std::exp(log_lo + (log_hi - log_lo) * uniform01(rng));
    const auto w = static_cast<int64_t>(std::llround(std::sqrt(target * ratio)));
    const auto h = static_cast<int64_t>(std::llround(std::sqrt(target / ratio)));
    if (w > 0 && w <= W && h > 0 && h <= H) {
      box.height = h;
      box.width = w;
      box.top = std::min<int64_t>(H - h, static_cast<int64_t>(uniform01(rng) * static_cast<double>(H - h + 1)));
      box.left = std::min<int64_t>(W - w, static_cast<int64_t>(uniform01(rng) * static_cast<double>(W - w + 1)));
      found = true;
    }
  }
  if (!found) {  // the whole image, cut to the nearest allowed aspect ratio, centred
    const double r = static_cast<double>(W) / static_cast<double>(H);
    box.width = W;
    box.height = H;
    if (r < s.ratio_min) box.height = std::max<int64_t>(1, std::llround(static_cast<double>(W) / s.ratio_min));
    if (r > s.ratio_max) box.width = std::max<int64_t>(1, std::llround(static_cast<double>(H) * s.ratio_max));
    box.top = (H - box.height) / 2;
    box.left = (W - box.width) / 2;
  }
  box.flip = uniform01(rng) < s.flip;
  return box;
}

at::Tensor crop_and_resize(const at::Tensor& image, const CropBox& box) {
  if (image.dim() != 3) throw Error("augmentation: expected a [C, H, W] image");
  const int64_t H = image.size(1), W = image.size(2);
  if (box.top < 0 || box.left < 0 || box.height < 1 || box.width < 1 || box.top + box.height > H ||
      box.left + box.width > W)
    throw Error("augmentation: the crop box lies outside the image");
  const at::Tensor crop = image.slice(1, box.top, box.top + box.height).slice(2, box.left, box.left + box.width);
  at::Tensor out = at::upsample_bilinear2d(crop.unsqueeze(0).to(at::kFloat), {H, W}, false).squeeze(0);
  if (box.flip) out = out.flip({2});
  return out.to(image.scalar_type());
}

std::vector<std::vector<CropBox>> augmented_view_boxes(int64_t N, int64_t H, int64_t W, int views, uint64_t seed,
                                                       const AugmentSettings& s) {
  std::mt19937_64 rng(seed);
  std::vector<std::vector<CropBox>> boxes(std::max(0, views));
  for (auto& view : boxes)
    for (int64_t n = 0; n < N; ++n) view.push_back(random_crop_box(H, W, s, rng));
  return boxes;
}

at::Tensor with_augmented_views(const at::Tensor& images, int views, uint64_t seed, const AugmentSettings& s) {
  if (images.dim() != 4) throw Error("augmentation: expected [N, C, H, W] images");
  if (views < 0) throw Error("augmentation: the number of views must be >= 0");
  if (views == 0) return images;
  const int64_t N = images.size(0);
  const auto boxes = augmented_view_boxes(N, images.size(2), images.size(3), views, seed, s);
  at::Tensor out = at::empty({N * (1 + views), images.size(1), images.size(2), images.size(3)}, images.options());
  out.slice(0, 0, N).copy_(images);
  for (int v = 0; v < views; ++v)
    for (int64_t n = 0; n < N; ++n) out[N * (1 + v) + n].copy_(crop_and_resize(images[n], boxes[v][n]));
  return out;
}

}  // namespace lorq
