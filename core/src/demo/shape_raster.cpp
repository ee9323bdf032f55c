#include "shape_raster.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

namespace lorq::shape_raster {

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

int64_t isqrt(int64_t v) {
  if (v <= 0) return 0;
  auto r = static_cast<int64_t>(std::sqrt(static_cast<double>(v)));  // then made exact
  while (r * r > v) --r;
  while ((r + 1) * (r + 1) <= v) ++r;
  return r;
}

int clamp255(int64_t v) { return static_cast<int>(std::min<int64_t>(255, std::max<int64_t>(0, v))); }

namespace {

// cos(k * pi / 32) in Q14, k = 0..16.
constexpr std::array<int64_t, 17> kCosTable = {16384, 16305, 16069, 15679, 15137, 14449, 13623, 12665, 11585,
                                               10394, 9102,  7723,  6270,  4756,  3196,  1606,  0};
constexpr int kCircleVertices = 64;

int64_t cos64(int k) {  // cos(k * 2pi / 64) in Q14
  k = ((k % 64) + 64) % 64;
  if (k <= 16) return kCosTable[k];
  if (k <= 32) return -kCosTable[32 - k];
  if (k <= 48) return -kCosTable[k - 32];
  return kCosTable[64 - k];
}
int64_t sin64(int k) { return cos64(k - 16); }

// A straight band from a to b (vertex units), half_width in vertex units, flat ends, as a polygon.
std::vector<cv::Point> band(cv::Point a, cv::Point b, int64_t half_width) {
  const int64_t dx = static_cast<int64_t>(b.x) - a.x, dy = static_cast<int64_t>(b.y) - a.y;
  const int64_t len = std::max<int64_t>(1, isqrt(dx * dx + dy * dy));
  const auto ox = static_cast<int>(round_div(-dy * half_width, len));
  const auto oy = static_cast<int>(round_div(dx * half_width, len));
  return {{a.x + ox, a.y + oy}, {b.x + ox, b.y + oy}, {b.x - ox, b.y - oy}, {a.x - ox, a.y - oy}};
}

// A linear gradient between two related colours along a random direction.
struct Gradient {
  Bgr c0{}, c1{};
  int64_t dx = 1, dy = 0, pmin = 0, pmax = 1;

  Gradient(Rng& rng, int size) {
    c0 = random_colour(rng, 15, 240);
    for (int i = 0; i < 3; ++i) c1[i] = clamp255(c0[i] + rng.range(-70, 70));
    do {
      dx = rng.range(-8, 8);
      dy = rng.range(-8, 8);
    } while (dx == 0 && dy == 0);
    const int64_t m = size - 1;
    const std::array<int64_t, 4> corners = {0, dx * m, dy * m, (dx + dy) * m};
    pmin = *std::min_element(corners.begin(), corners.end());
    pmax = *std::max_element(corners.begin(), corners.end());
  }
  Bgr at(int64_t x, int64_t y) const {
    const int64_t p = dx * x + dy * y - pmin, span = pmax - pmin;
    Bgr c;
    for (int i = 0; i < 3; ++i) c[i] = clamp255(c0[i] + round_div((c1[i] - c0[i]) * p, span));
    return c;
  }
};

// A low-contrast variation of a colour: the same shift in brightness on all channels, a little jitter on each.
Bgr nearby_colour(const Bgr& base, Rng& rng) {
  const int64_t shift = rng.range(10, 28) * (rng.chance(1, 2) ? 1 : -1);
  Bgr c;
  for (int i = 0; i < 3; ++i) c[i] = clamp255(base[i] + shift + rng.range(-6, 6));
  return c;
}

cv::Point random_point(Rng& rng, int size, int margin) {  // vertex units, may lie outside the image by `margin` px
  return {static_cast<int>(rng.range(-margin * kOne, (size - 1 + margin) * kOne)),
          static_cast<int>(rng.range(-margin * kOne, (size - 1 + margin) * kOne))};
}

void draw_texture(cv::Mat& bg, const Gradient& grad, Rng& rng) {
  const int size = bg.rows;
  const int64_t elements = rng.range(2, 5);
  for (int64_t e = 0; e < elements; ++e) {
    if (rng.chance(1, 2)) {  // a soft band across (part of) the image
      const cv::Point a = random_point(rng, size, size / 4), b = random_point(rng, size, size / 4);
      const int64_t half_width = rng.range(kOne * 3 / 4, kOne * 2);
      const Bgr c = nearby_colour(grad.at((a.x + b.x) / 2 / kOne, (a.y + b.y) / 2 / kOne), rng);
      const std::vector<std::vector<cv::Point>> polys = {band(a, b, half_width)};
      cv::fillPoly(bg, polys, scalar(c), cv::LINE_AA, kShift);
    } else {  // an elliptic blob
      Placement at;
      at.cx = rng.range(0, (size - 1) * kOne);
      at.cy = rng.range(0, (size - 1) * kOne);
      at.rx = rng.range(size * kOne / 16, size * kOne / 4);
      at.ry = rng.range(size * kOne / 16, size * kOne / 4);
      at.rot = Rotation::random(rng);
      const Bgr c = nearby_colour(grad.at(at.cx / kOne, at.cy / kOne), rng);
      const std::vector<std::vector<cv::Point>> polys = {at.map(unit_circle(kUnit))};
      cv::fillPoly(bg, polys, scalar(c), cv::LINE_AA, kShift);
    }
  }
}

}  // namespace

Poly unit_circle(int64_t radius_q14) {
  Poly p;
  p.reserve(kCircleVertices);
  for (int k = 0; k < kCircleVertices; ++k) {
    p.push_back({round_div(cos64(k) * radius_q14, kUnit), round_div(sin64(k) * radius_q14, kUnit)});
  }
  return p;
}

Rotation Rotation::random(Rng& rng) {
  constexpr int64_t n = 128;
  Rotation r;
  r.quarter = static_cast<int>(rng.range(0, 3));
  const int64_t t = rng.range(0, n - 1);
  r.c = n * n - t * t;
  r.s = 2 * t * n;
  r.d = n * n + t * t;
  return r;
}

Vec Rotation::apply(Vec v) const {
  for (int i = 0; i < quarter; ++i) v = {-v.y, v.x};
  return {round_div(v.x * c - v.y * s, d), round_div(v.x * s + v.y * c, d)};
}

std::vector<cv::Point> Placement::map(const Poly& poly) const {
  std::vector<cv::Point> out;
  out.reserve(poly.size());
  for (const Vec& v : poly) {
    const Vec r = rot.apply({round_div(v.x * rx, kUnit), round_div(v.y * ry, kUnit)});
    out.emplace_back(static_cast<int>(cx + r.x), static_cast<int>(cy + r.y));
  }
  return out;
}

ShapeGeometry make_shape(int cls, const Placement& at, Rng& rng) {
  ShapeGeometry g;
  switch (cls) {
    case kCircle:
      g.fill.push_back(at.map(unit_circle(kUnit)));
      break;
    case kSquare: {
      const int64_t a = 11585;  // 1/sqrt(2): corners on the unit circle
      g.fill.push_back(at.map({{-a, -a}, {a, -a}, {a, a}, {-a, a}}));
      break;
    }
    case kTriangle:  // equilateral, apex up before rotation
      g.fill.push_back(at.map({{0, -16384}, {14189, 8192}, {-14189, 8192}}));
      break;
    case kStar: {  // 5-pointed: outer points on the unit circle, inner corners at a random 0.40..0.50
      static constexpr std::array<Vec, 10> kDirs = {{{0, -16384},
                                                     {-9630, -13255},
                                                     {-15582, -5063},
                                                     {-15582, 5063},
                                                     {-9630, 13255},
                                                     {0, 16384},
                                                     {9630, 13255},
                                                     {15582, 5063},
                                                     {15582, -5063},
                                                     {9630, -13255}}};
      const int64_t inner = rng.range(6554, 8192);  // 0.40 .. 0.50 in Q14
      Poly p;
      for (size_t k = 0; k < kDirs.size(); ++k) {
        if (k % 2 == 0) {
          p.push_back(kDirs[k]);
        } else {
          p.push_back({round_div(kDirs[k].x * inner, kUnit), round_div(kDirs[k].y * inner, kUnit)});
        }
      }
      g.fill.push_back(at.map(p));
      break;
    }
    case kCross: {  // plus sign: two bars of half-length l and half-width w (corners stay inside the unit circle)
      const int64_t l = 15400;                  // 0.94
      const int64_t w = rng.range(3604, 5243);  // 0.22 .. 0.32
      g.fill.push_back(at.map({{-w, -l},
                               {w, -l},
                               {w, -w},
                               {l, -w},
                               {l, w},
                               {w, w},
                               {w, l},
                               {-w, l},
                               {-w, w},
                               {-l, w},
                               {-l, -w},
                               {-w, -w}}));
      break;
    }
    case kRing: {  // annulus: inner radius 0.48 .. 0.62 of the outer
      g.fill.push_back(at.map(unit_circle(kUnit)));
      g.holes.push_back(at.map(unit_circle(rng.range(7864, 10158))));
      break;
    }
    default:
      break;
  }
  return g;
}

ShapeRaster rasterise(const ShapeGeometry& geom, int size) {
  ShapeRaster r;
  r.mask = cv::Mat::zeros(size, size, CV_8UC1);
  cv::fillPoly(r.mask, geom.fill, cv::Scalar(255), cv::LINE_8, kShift);
  if (!geom.holes.empty()) cv::fillPoly(r.mask, geom.holes, cv::Scalar(0), cv::LINE_8, kShift);
  r.alpha = cv::Mat::zeros(size, size, CV_8UC1);
  cv::fillPoly(r.alpha, geom.fill, cv::Scalar(255), cv::LINE_AA, kShift);
  if (!geom.holes.empty()) cv::fillPoly(r.alpha, geom.holes, cv::Scalar(0), cv::LINE_AA, kShift);
  return r;
}

int luma(const Bgr& c) { return (114 * c[0] + 587 * c[1] + 299 * c[2] + 500) / 1000; }

Bgr random_colour(Rng& rng, int lo, int hi) {
  Bgr c;
  for (int& v : c) v = static_cast<int>(rng.range(lo, hi));
  return c;
}

cv::Mat textured_background(Rng& rng, int size) {
  const Gradient grad(rng, size);
  cv::Mat bg(size, size, CV_8UC3);
  for (int y = 0; y < size; ++y) {
    auto* row = bg.ptr<cv::Vec3b>(y);
    for (int x = 0; x < size; ++x) {
      const Bgr c = grad.at(x, y);
      row[x] = cv::Vec3b(static_cast<uchar>(c[0]), static_cast<uchar>(c[1]), static_cast<uchar>(c[2]));
    }
  }
  draw_texture(bg, grad, rng);
  if (rng.chance(1, 2)) {  // 1/4..1/2 of the side long, anywhere
    const cv::Point a = random_point(rng, size, 0);
    Placement dir;
    dir.rx = dir.ry = rng.range(size * kOne / 4, size * kOne / 2);
    dir.rot = Rotation::random(rng);
    const cv::Point d = dir.map({{kUnit, 0}})[0];
    cv::line(bg, a, a + d, scalar(random_colour(rng)), 1, cv::LINE_AA, kShift);
  }
  return bg;
}

Bgr mean_under(const cv::Mat& image, const cv::Mat& mask) {
  std::array<int64_t, 3> sum = {0, 0, 0};
  int64_t n = 0;
  for (int y = 0; y < image.rows; ++y) {
    const auto* m = mask.ptr<uchar>(y);
    const auto* b = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x) {
      if (!m[x]) continue;
      for (int i = 0; i < 3; ++i) sum[i] += b[x][i];
      ++n;
    }
  }
  Bgr mean{128, 128, 128};
  if (n > 0) {
    for (int i = 0; i < 3; ++i) mean[i] = static_cast<int>(round_div(sum[i], n));
  }
  return mean;
}

Bgr object_colour(const Bgr& bg_mean, Rng& rng) {
  const int bg_luma = luma(bg_mean);
  for (int attempt = 0; attempt < 256; ++attempt) {
    const Bgr c = random_colour(rng);
    const int l1 = std::abs(c[0] - bg_mean[0]) + std::abs(c[1] - bg_mean[1]) + std::abs(c[2] - bg_mean[2]);
    if (std::abs(luma(c) - bg_luma) >= 64 && l1 >= 160) return c;
  }
  return bg_luma >= 128 ? Bgr{0, 0, 0} : Bgr{255, 255, 255};
}

void composite(cv::Mat& image, const cv::Mat& alpha, const Bgr& colour) {
  for (int y = 0; y < image.rows; ++y) {
    const auto* a = alpha.ptr<uchar>(y);
    auto* px = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x) {
      if (!a[x]) continue;  // unchanged: b * 255 / 255
      for (int i = 0; i < 3; ++i) {
        px[x][i] = static_cast<uchar>(
            round_div(static_cast<int64_t>(px[x][i]) * (255 - a[x]) + int64_t{colour[i]} * a[x], 255));
      }
    }
  }
}

void add_noise(cv::Mat& image, Rng& rng) {
  const int64_t noise = rng.range(2, 10);
  for (int y = 0; y < image.rows; ++y) {
    auto* px = image.ptr<cv::Vec3b>(y);
    for (int x = 0; x < image.cols; ++x) {
      const uint64_t r = rng.next();
      for (int i = 0; i < 3; ++i) {
        const int64_t jitter = static_cast<int64_t>((r >> (16 * i)) & 0xFFFF) % (2 * noise + 1) - noise;
        px[x][i] = static_cast<uchar>(clamp255(int64_t{px[x][i]} + jitter));
      }
    }
  }
}

}  // namespace lorq::shape_raster
