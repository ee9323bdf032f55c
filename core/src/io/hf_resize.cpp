// See hf_resize.h. The arithmetic follows ATen's UpSampleKernel.cpp (uint8, antialias=True) term by term: weights in
// double from the triangle filter, normalised, then int16 at the largest precision at which the axis's largest
// weight still fits, rounded half away from zero.
#include "lorq/io/hf_resize.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

namespace {

double triangle(double x) {
  if (x < 0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// One pass along an axis of a uint8 image held as [outer][axis][inner] (inner = the samples that move together:
// channels for the horizontal pass, a whole row for the vertical one).
void resample_axis(const uint8_t* in, uint8_t* out, int64_t outer, int64_t inner, const AaAxisFilter& f) {
  const int32_t half = f.precision > 0 ? (int32_t{1} << (f.precision - 1)) : 0;
  for (int64_t o = 0; o < outer; ++o) {
    const uint8_t* src = in + o * f.in_size * inner;
    uint8_t* dst = out + o * f.out_size * inner;
    for (int64_t i = 0; i < f.out_size; ++i) {
      const int16_t* w = f.weights.data() + i * f.taps;
      const uint8_t* s0 = src + f.first[i] * inner;
      for (int64_t c = 0; c < inner; ++c) {
        // Every weight is >= 0 (a triangle filter), so the sum stays within int32: 255 · 2^22 < 2^31.
        int32_t acc = half;
        for (int64_t k = 0; k < f.count[i]; ++k) acc += int32_t{s0[k * inner + c]} * int32_t{w[k]};
        acc >>= f.precision;
        dst[i * inner + c] = static_cast<uint8_t>(std::clamp<int32_t>(acc, 0, 255));
      }
    }
  }
}

}  // namespace

AaAxisFilter hf_bilinear_axis_filter(int64_t in_size, int64_t out_size) {
  if (in_size < 1 || out_size < 1)
    throw Error("resize: sizes must be at least 1 (got " + std::to_string(in_size) + " -> " + std::to_string(out_size) +
                ")");
  AaAxisFilter f;
  f.in_size = in_size;
  f.out_size = out_size;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  const double support = scale >= 1.0 ? (2 * 0.5) * scale : 2 * 0.5;  // bilinear: interp_size 2
  f.taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  f.first.resize(out_size);
  f.count.resize(out_size);
  std::vector<double> wd(static_cast<size_t>(out_size * f.taps), 0.0);
  const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
  double wt_max = 0.0;
  for (int64_t i = 0; i < out_size; ++i) {
    const double center = scale * (i + 0.5);
    const int64_t xmin = std::max(static_cast<int64_t>(center - support + 0.5), int64_t{0});
    // ATen clips the count to the taps: rounding can make it one larger in rare cases.
    const int64_t xsize =
        std::clamp(std::min(static_cast<int64_t>(center + support + 0.5), in_size) - xmin, int64_t{0}, f.taps);
    double* w = wd.data() + i * f.taps;
    double total = 0.0;
    for (int64_t j = 0; j < xsize; ++j) {
      w[j] = triangle((j + xmin - center + 0.5) * invscale);
      total += w[j];
    }
    if (total != 0.0) {
      for (int64_t j = 0; j < xsize; ++j) {
        w[j] /= total;
        wt_max = std::max(wt_max, w[j]);
      }
    }
    f.first[i] = xmin;
    f.count[i] = xsize;
  }
  int precision = 0;
  for (precision = 0; precision < 22; ++precision) {
    const int next = static_cast<int>(0.5 + wt_max * (1 << (precision + 1)));
    if (next >= (1 << 15)) break;
  }
  f.precision = precision;
  f.weights.resize(wd.size());
  for (size_t k = 0; k < wd.size(); ++k) {
    const double v = wd[k] * (1 << precision);
    f.weights[k] = static_cast<int16_t>(v < 0 ? static_cast<int>(-0.5 + v) : static_cast<int>(0.5 + v));
  }
  return f;
}

at::Tensor hf_resize_bilinear(const at::Tensor& image, int64_t out_h, int64_t out_w) {
  if (image.scalar_type() != at::kByte || image.dim() != 3 || image.size(0) < 1 || image.size(1) < 1 ||
      image.size(2) < 1)
    throw Error("resize: expected a uint8 [H, W, C] image");
  if (out_h < 1 || out_w < 1)
    throw Error("resize: the target size " + std::to_string(out_h) + "x" + std::to_string(out_w) + " is empty");
  const int64_t h = image.size(0), w = image.size(1), c = image.size(2);
  at::Tensor cur = image.contiguous();
  if (out_w != w) {
    const AaAxisFilter fx = hf_bilinear_axis_filter(w, out_w);
    at::Tensor next = at::empty({h, out_w, c}, at::kByte);
    resample_axis(cur.data_ptr<uint8_t>(), next.data_ptr<uint8_t>(), h, c, fx);
    cur = next;
  }
  if (out_h != h) {
    const AaAxisFilter fy = hf_bilinear_axis_filter(h, out_h);
    at::Tensor next = at::empty({out_h, out_w, c}, at::kByte);
    resample_axis(cur.data_ptr<uint8_t>(), next.data_ptr<uint8_t>(), 1, out_w * c, fy);
    cur = next;
  }
  return cur.is_same(image) ? image.clone() : cur;
}

std::pair<int64_t, int64_t> yolos_resize_size(int64_t h, int64_t w, int64_t shortest_edge, int64_t longest_edge,
                                              int64_t mod) {
  if (h < 1 || w < 1 || shortest_edge < 1)
    throw Error("resize: an image of " + std::to_string(h) + "x" + std::to_string(w) + " to shortest edge " +
                std::to_string(shortest_edge) + " is not a valid size");
  int64_t size = shortest_edge;
  bool capped = false;
  double raw = 0.0;
  if (longest_edge > 0) {
    const double min_side = static_cast<double>(std::min(h, w)), max_side = static_cast<double>(std::max(h, w));
    if (max_side / min_side * static_cast<double>(size) > static_cast<double>(longest_edge)) {
      raw = static_cast<double>(longest_edge) * min_side / max_side;
      size = static_cast<int64_t>(std::nearbyint(raw));  // Python's round(): half to even
      capped = true;
    }
  }
  int64_t oh = 0, ow = 0;
  // Python's int() of a non-negative float truncates, as the casts below do.
  if (w < h) {
    ow = size;
    oh = capped ? static_cast<int64_t>(raw * static_cast<double>(h) / static_cast<double>(w))
                : static_cast<int64_t>(static_cast<double>(size * h) / static_cast<double>(w));
  } else if ((h <= w && h == size) || (w <= h && w == size)) {
    oh = h;
    ow = w;
  } else {
    oh = size;
    ow = capped ? static_cast<int64_t>(raw * static_cast<double>(w) / static_cast<double>(h))
                : static_cast<int64_t>(static_cast<double>(size * w) / static_cast<double>(h));
  }
  if (mod > 0) {
    ow -= ow % mod;
    oh -= oh % mod;
  }
  if (oh < 1 || ow < 1)
    throw Error("resize: an image of " + std::to_string(h) + "x" + std::to_string(w) + " becomes " +
                std::to_string(oh) + "x" + std::to_string(ow) + " (too thin for the size rule)");
  return {oh, ow};
}

at::Tensor hf_normalize(const at::Tensor& image, const std::array<float, 3>& mean, const std::array<float, 3>& std) {
  if (image.scalar_type() != at::kByte || image.dim() != 3 || image.size(2) != 3)
    throw Error("normalise: expected a uint8 [H, W, 3] image");
  const int64_t h = image.size(0), w = image.size(1);
  const at::Tensor src = image.contiguous();
  at::Tensor out = at::empty({3, h, w}, at::kFloat);
  const uint8_t* in = src.data_ptr<uint8_t>();
  float* o = out.data_ptr<float>();
  for (int c = 0; c < 3; ++c) {
    // float32 products, as torch.tensor(mean) * (1 / rescale_factor) gives them.
    const float m = mean[c] * 255.0f, s = std[c] * 255.0f;
    float* oc = o + c * h * w;
    for (int64_t p = 0; p < h * w; ++p) oc[p] = (static_cast<float>(in[p * 3 + c]) - m) / s;
  }
  return out;
}

}  // namespace lorq
