#pragma once
// The integer drawing primitives shared by the demo generators (shapes_dataset.cpp: one shape per image;
// scenes.cpp: several per image). Private to core/src/demo.
//
// Everything here is integer arithmetic so that a sample is bit-identical on every machine: no standard
// distributions (implementation-defined), no libm trigonometry (not correctly rounded), no floating point that a
// compiler could contract into FMAs. Rasterisation is OpenCV's integer fillPoly and 1-px line code only.
#include <array>
#include <cstdint>
#include <opencv2/core.hpp>
#include <vector>

namespace lorq::shape_raster {

constexpr int kShift = 8;              // sub-pixel bits of the vertices handed to OpenCV
constexpr int64_t kOne = 1 << kShift;  // one pixel in vertex units
constexpr int64_t kUnit = 16384;       // 1.0 in shape space (Q14)
constexpr int kNumClasses = 6;
enum ShapeClass { kCircle = 0, kSquare, kTriangle, kStar, kCross, kRing };

uint64_t mix64(uint64_t z);  // the splitmix64 finaliser

// A splitmix64 stream keyed by (seed, index).
class Rng {
 public:
  Rng(uint64_t seed, int64_t index)
      : state_(mix64(mix64(seed + 0x6A09E667F3BCC908ULL) + static_cast<uint64_t>(index))) {}

  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return mix64(state_);
  }
  // Uniform integer in [lo, hi] (hi - lo < 2^32), by multiply-shift on the top 32 bits.
  int64_t range(int64_t lo, int64_t hi) {
    const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
    return lo + static_cast<int64_t>(((next() >> 32) * span) >> 32);
  }
  // True with probability num/den.
  bool chance(int64_t num, int64_t den) { return range(0, den - 1) < num; }

 private:
  uint64_t state_;
};

// a / b rounded to nearest (halves away from zero), for b > 0.
inline int64_t round_div(int64_t a, int64_t b) { return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b); }
int64_t isqrt(int64_t v);
int clamp255(int64_t v);

// Shape space: Q14, y pointing down (as in the image), shapes centred on the origin and inside the unit circle.
struct Vec {
  int64_t x, y;
};
using Poly = std::vector<Vec>;

Poly unit_circle(int64_t radius_q14);

// A rotation by an exact rational cosine/sine: a quarter-turn count q, then the angle 2*atan(t/n), t in [0, n).
struct Rotation {
  int quarter = 0;
  int64_t c = 1, s = 0, d = 1;  // cos = c/d, sin = s/d

  static Rotation random(Rng& rng);
  Vec apply(Vec v) const;
};

// Shape space -> vertex units: scale each axis by a radius in vertex units (one shape unit = that radius), rotate,
// translate.
struct Placement {
  int64_t cx = 0, cy = 0;  // vertex units
  int64_t rx = 0, ry = 0;  // vertex units
  Rotation rot;

  std::vector<cv::Point> map(const Poly& poly) const;
};

// The object: outlines to fill, then holes to cut out of them (the ring's inner disc).
struct ShapeGeometry {
  std::vector<std::vector<cv::Point>> fill;
  std::vector<std::vector<cv::Point>> holes;
};

// The outline of class `cls` at `at`; draws the class's own random proportions (star depth, bar width, hole) from
// rng.
ShapeGeometry make_shape(int cls, const Placement& at, Rng& rng);

// The solid mask (255 inside, LINE_8) and the antialiased coverage used for compositing, from the same vertices.
struct ShapeRaster {
  cv::Mat mask;   // CV_8UC1, 0/255
  cv::Mat alpha;  // CV_8UC1, coverage 0..255
};
ShapeRaster rasterise(const ShapeGeometry& geometry, int size);

using Bgr = std::array<int, 3>;
int luma(const Bgr& c);
Bgr random_colour(Rng& rng, int lo = 0, int hi = 255);
inline cv::Scalar scalar(const Bgr& c) { return cv::Scalar(c[0], c[1], c[2]); }

// The background: a linear gradient between two related colours, low-contrast bands and blobs, and sometimes a thin
// distractor line (not part of any object). CV_8UC3, size x size.
cv::Mat textured_background(Rng& rng, int size);

// Mean colour of `image` (CV_8UC3) under `mask`, rounded; mid-grey for an empty mask.
Bgr mean_under(const cv::Mat& image, const cv::Mat& mask);

// An object colour with clear contrast to `bg_mean`: a brightness gap of at least 64 and a colour distance (L1) of
// at least 160. Random colours are tried first; black or white is the fallback.
Bgr object_colour(const Bgr& bg_mean, Rng& rng);

// image = image * (1 - alpha) + colour * alpha, rounded, in place.
void composite(cv::Mat& image, const cv::Mat& alpha, const Bgr& colour);

// Sensor-like noise over the whole image: draws a level 2..10, then one number per pixel. In place.
void add_noise(cv::Mat& image, Rng& rng);

}  // namespace lorq::shape_raster
