// The Hugging Face (torchvision backend) uint8 resize, size rule and normalisation: against a slow per-pixel
// reimplementation of the formulas in ../shared/models/HF_GOLDENS.md, hand-computed cases, and a float resize.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/io/hf_resize.h"

using namespace lorq;

namespace {

// Output sample i of one axis, from scratch: taps, double weights, int16 weights at the axis precision.
struct SlowTaps {
  int64_t first = 0;
  std::vector<double> w;  // normalised double weights
};

SlowTaps slow_taps(int64_t in, int64_t out, int64_t i) {
  const double scale = double(in) / double(out);
  const double support = std::max(scale, 1.0);
  const double center = scale * (double(i) + 0.5);
  SlowTaps t;
  t.first = std::max<int64_t>(int64_t(center - support + 0.5), 0);
  const int64_t last = std::min<int64_t>(int64_t(center + support + 0.5), in);
  double sum = 0;
  for (int64_t j = t.first; j < last; ++j) {
    const double x = std::abs((double(j) - center + 0.5) * (1.0 / support));
    t.w.push_back(x < 1 ? 1 - x : 0);
    sum += t.w.back();
  }
  for (double& v : t.w) v /= sum;
  return t;
}

int slow_precision(int64_t in, int64_t out) {
  double wmax = 0;
  for (int64_t i = 0; i < out; ++i)
    for (double v : slow_taps(in, out, i).w) wmax = std::max(wmax, v);
  int p = 0;
  while (p < 22 && int(0.5 + wmax * double(int64_t{1} << (p + 1))) < (1 << 15)) ++p;
  return p;
}

// The value of output sample i along an axis whose input samples are get(j).
template <typename Get>
uint8_t slow_sample(int64_t in, int64_t out, int64_t i, int p, Get get) {
  const SlowTaps t = slow_taps(in, out, i);
  int64_t acc = int64_t{1} << (p - 1);
  for (size_t k = 0; k < t.w.size(); ++k) {
    const double v = t.w[k] * double(int64_t{1} << p);
    const int64_t wi = v < 0 ? int64_t(-0.5 + v) : int64_t(0.5 + v);
    acc += int64_t(get(t.first + int64_t(k))) * wi;
  }
  return uint8_t(std::clamp<int64_t>(acc >> p, 0, 255));
}

at::Tensor slow_resize(const at::Tensor& img, int64_t oh, int64_t ow) {
  const int64_t h = img.size(0), w = img.size(1), c = img.size(2);
  auto a = img.accessor<uint8_t, 3>();
  at::Tensor mid = img.clone();
  if (ow != w) {
    mid = at::empty({h, ow, c}, at::kByte);
    auto m = mid.accessor<uint8_t, 3>();
    const int p = slow_precision(w, ow);
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < ow; ++x)
        for (int64_t ch = 0; ch < c; ++ch)
          m[y][x][ch] = slow_sample(w, ow, x, p, [&](int64_t j) { return a[y][j][ch]; });
  }
  if (oh == h) return mid;
  at::Tensor out = at::empty({oh, ow, c}, at::kByte);
  auto m = mid.accessor<uint8_t, 3>();
  auto o = out.accessor<uint8_t, 3>();
  const int p = slow_precision(h, oh);
  for (int64_t y = 0; y < oh; ++y)
    for (int64_t x = 0; x < ow; ++x)
      for (int64_t ch = 0; ch < c; ++ch) o[y][x][ch] = slow_sample(h, oh, y, p, [&](int64_t j) { return m[j][x][ch]; });
  return out;
}

at::Tensor random_image(std::mt19937& rng, int64_t h, int64_t w, int64_t c = 3) {
  at::Tensor t = at::empty({h, w, c}, at::kByte);
  std::uniform_int_distribution<int> d(0, 255);
  uint8_t* p = t.data_ptr<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = uint8_t(d(rng));
  return t;
}

at::Tensor row(std::vector<uint8_t> v) {
  return at::tensor(std::vector<int64_t>(v.begin(), v.end())).to(at::kByte).reshape({1, int64_t(v.size()), 1});
}

}  // namespace

TEST(HfResize, HandComputedDownscaleByTwo) {
  // in 4 -> out 2: scale 2, taps {0,1,2} weights {3,3,1}/7 and {1,2,3} weights {1,3,3}/7, precision 16.
  const AaAxisFilter f = hf_bilinear_axis_filter(4, 2);
  EXPECT_EQ(f.precision, 16);
  EXPECT_EQ(f.first, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(f.count, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(f.weights[0], 28087);  // round(3/7 · 65536)
  EXPECT_EQ(f.weights[2], 9362);   // round(1/7 · 65536)
  // (0·3 + 70·3 + 140)/7 = 50; (70 + 140·3 + 210·3)/7 = 160.
  const at::Tensor out = hf_resize_bilinear(row({0, 70, 140, 210}), 1, 2);
  EXPECT_EQ(out.flatten()[0].item<int>(), 50);
  EXPECT_EQ(out.flatten()[1].item<int>(), 160);
}

TEST(HfResize, HandComputedUpscaleByTwoRoundsHalvesDown) {
  // in 2 -> out 4: weights {1}, {3/4, 1/4}, {1/4, 3/4}, {1}, precision 14: 25.5 and 75.5 come out 25 and 75
  // ((2^13 + Σ) >> 14 with Σ = 100 · 4096 = 409600 gives 25).
  const at::Tensor out = hf_resize_bilinear(row({0, 100}), 1, 4);
  EXPECT_EQ(hf_bilinear_axis_filter(2, 4).precision, 14);
  const std::vector<int> want{0, 25, 75, 100};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(out.flatten()[i].item<int>(), want[i]) << i;
}

TEST(HfResize, MatchesTheSlowReferenceOnRandomSizes) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> side(1, 37);
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t h = side(rng), w = side(rng), oh = side(rng), ow = side(rng);
    const at::Tensor img = random_image(rng, h, w);
    const at::Tensor got = hf_resize_bilinear(img, oh, ow);
    ASSERT_EQ(got.sizes(), (at::IntArrayRef{oh, ow, 3}));
    ASSERT_TRUE(at::equal(got, slow_resize(img, oh, ow))) << h << "x" << w << " -> " << oh << "x" << ow;
  }
  // Large factors (the precision rises as the largest weight shrinks) and one-pixel edges.
  const std::vector<std::array<int64_t, 4>> cases{{1, 1, 1, 1},   {1, 1, 5, 3},    {5, 3, 1, 1},   {1, 300, 1, 2},
                                                  {300, 2, 1, 2}, {2, 700, 3, 3},  {3, 3, 97, 61}, {480, 640, 32, 48},
                                                  {17, 1, 4, 9},  {64, 64, 64, 63}};
  for (const auto& c : cases) {
    const at::Tensor img = random_image(rng, c[0], c[1]);
    ASSERT_TRUE(at::equal(hf_resize_bilinear(img, c[2], c[3]), slow_resize(img, c[2], c[3])))
        << c[0] << "x" << c[1] << " -> " << c[2] << "x" << c[3];
  }
}

TEST(HfResize, PrecisionGrowsToTwentyTwoBitsForHugeFactors) {
  // 1000 -> 1: one output sample averaging 1000 inputs; the largest weight is ~1/1000, so no precision up to 21
  // makes it reach 2^15 and the loop ends at 22.
  EXPECT_EQ(hf_bilinear_axis_filter(1000, 1).precision, 22);
  EXPECT_EQ(slow_precision(1000, 1), 22);
  std::mt19937 rng(3);
  const at::Tensor img = random_image(rng, 2, 1000, 1);
  EXPECT_TRUE(at::equal(hf_resize_bilinear(img, 1, 1), slow_resize(img, 1, 1)));
}

TEST(HfResize, UnchangedSizeIsTheIdentityAndOneAxisOnly) {
  std::mt19937 rng(11);
  const at::Tensor img = random_image(rng, 13, 21);
  const at::Tensor same = hf_resize_bilinear(img, 13, 21);
  EXPECT_TRUE(at::equal(same, img));
  EXPECT_NE(same.data_ptr(), img.data_ptr());  // a copy: the caller may change it
  // Only the width changes: every row is resampled independently of the others.
  const at::Tensor wide = hf_resize_bilinear(img, 13, 8);
  for (int64_t y = 0; y < 13; ++y)
    EXPECT_TRUE(at::equal(wide[y], hf_resize_bilinear(img.narrow(0, y, 1), 1, 8)[0])) << y;
}

TEST(HfResize, ConstantImagesStayConstantAndResultsStayNearAFloatResize) {
  std::mt19937 rng(5);
  for (const uint8_t v : {uint8_t{0}, uint8_t{1}, uint8_t{128}, uint8_t{254}, uint8_t{255}}) {
    const at::Tensor flat = at::full({19, 23, 3}, v, at::kByte);
    EXPECT_TRUE(at::equal(hf_resize_bilinear(flat, 7, 50), at::full({7, 50, 3}, v, at::kByte))) << int(v);
  }
  // The same filter in double with no intermediate rounding: the integer result is within one grey level per pass.
  const at::Tensor img = random_image(rng, 29, 31, 1);
  const int64_t oh = 11, ow = 47;
  const at::Tensor got = hf_resize_bilinear(img, oh, ow).to(at::kDouble);
  at::Tensor ref = at::zeros({oh, ow}, at::kDouble);
  auto a = img.accessor<uint8_t, 3>();
  for (int64_t y = 0; y < oh; ++y) {
    const SlowTaps ty = slow_taps(29, oh, y);
    for (int64_t x = 0; x < ow; ++x) {
      const SlowTaps tx = slow_taps(31, ow, x);
      double s = 0;
      for (size_t i = 0; i < ty.w.size(); ++i)
        for (size_t j = 0; j < tx.w.size(); ++j)
          s += ty.w[i] * tx.w[j] * a[ty.first + int64_t(i)][tx.first + int64_t(j)][0];
      ref[y][x] = s;
    }
  }
  EXPECT_LE((got.squeeze(2) - ref).abs().max().item<double>(), 1.0 + 1e-9);
}

TEST(HfResize, RejectsBadInput) {
  EXPECT_THROW(hf_resize_bilinear(at::zeros({4, 4, 3}, at::kFloat), 2, 2), Error);
  EXPECT_THROW(hf_resize_bilinear(at::zeros({4, 4}, at::kByte), 2, 2), Error);
  EXPECT_THROW(hf_resize_bilinear(at::zeros({4, 4, 3}, at::kByte), 0, 2), Error);
  EXPECT_THROW(hf_normalize(at::zeros({4, 4, 1}, at::kByte), {0.5f, 0.5f, 0.5f}, {0.5f, 0.5f, 0.5f}), Error);
}

TEST(YolosResizeSize, HandComputedCases) {
  // 480x640: 640/480·800 = 1066.7 <= 1333, so the short side becomes 800 and the long one int(800·640/480) = 1066,
  // floored to a multiple of 16: 1056.
  EXPECT_EQ(yolos_resize_size(480, 640), std::make_pair(int64_t{800}, int64_t{1056}));
  // Portrait: the same with the sides swapped (the w < h branch).
  EXPECT_EQ(yolos_resize_size(640, 480), std::make_pair(int64_t{1056}, int64_t{800}));
  // 100x400: 4·800 > 1333, raw = 1333·100/400 = 333.25 -> size 333; h = 333 (floored 320), w = int(333.25·4) =
  // 1333 (floored 1328).
  EXPECT_EQ(yolos_resize_size(100, 400), std::make_pair(int64_t{320}, int64_t{1328}));
  EXPECT_EQ(yolos_resize_size(400, 100), std::make_pair(int64_t{1328}, int64_t{320}));
  // The short side already at 800: kept as it is, then floored (1066 -> 1056).
  EXPECT_EQ(yolos_resize_size(800, 1066), std::make_pair(int64_t{800}, int64_t{1056}));
  // Square: 800x800 from any size.
  EXPECT_EQ(yolos_resize_size(37, 37), std::make_pair(int64_t{800}, int64_t{800}));
  // 427x640 (the second golden target size): int(800·640/427) = int(1199.06) = 1199 -> 1184.
  EXPECT_EQ(yolos_resize_size(427, 640), std::make_pair(int64_t{800}, int64_t{1184}));
  // Python's round() is half to even: raw = 1333·2/4 = 666.5 -> 666 (without the floor, mod 1).
  EXPECT_EQ(yolos_resize_size(2, 4, 800, 1333, 1), std::make_pair(int64_t{666}, int64_t{1333}));
  // No floor: 480x640 -> 800x1066.
  EXPECT_EQ(yolos_resize_size(480, 640, 800, 1333, 0), std::make_pair(int64_t{800}, int64_t{1066}));
  // Too thin to survive the floor.
  EXPECT_THROW(yolos_resize_size(1, 1000), Error);
}

TEST(HfNormalize, FusedFloat32Formula) {
  at::Tensor img = at::empty({2, 1, 3}, at::kByte);
  const uint8_t px[6] = {0, 128, 255, 17, 200, 99};
  std::copy(px, px + 6, img.data_ptr<uint8_t>());
  const std::array<float, 3> mean{0.485f, 0.456f, 0.406f}, sd{0.229f, 0.224f, 0.225f};
  const at::Tensor out = hf_normalize(img, mean, sd);
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{3, 2, 1}));
  ASSERT_EQ(out.scalar_type(), at::kFloat);
  for (int y = 0; y < 2; ++y)
    for (int c = 0; c < 3; ++c) {
      const float m = mean[c] * 255.0f, s = sd[c] * 255.0f;
      EXPECT_EQ(out[c][y][0].item<float>(), (float(px[y * 3 + c]) - m) / s);
      // ... which is within float rounding of the two-step (x/255 - mean)/std.
      EXPECT_NEAR(out[c][y][0].item<float>(), (px[y * 3 + c] / 255.0 - mean[c]) / sd[c], 1e-5);
    }
}
