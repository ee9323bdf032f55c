// Augmented views for adaptive rounding: crop_and_resize against a per-pixel bilinear reference on odd sizes, the
// drawn boxes inside the image and within the settings' area and ratio, the views' layout and reproducibility.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

#include "lorq/common/error.h"
#include "lorq/quant/augmented_views.h"

using namespace lorq;

namespace {

// Bilinear resize of the box to H×W with half-pixel centres (align_corners=False), one output pixel at a time.
at::Tensor reference_crop_resize(const at::Tensor& image, const CropBox& b) {
  const int64_t C = image.size(0), H = image.size(1), W = image.size(2);
  const auto src = image.to(at::kDouble);
  auto a = src.accessor<double, 3>();
  at::Tensor out = at::zeros({C, H, W}, at::kDouble);
  auto o = out.accessor<double, 3>();
  auto source = [](int64_t i, int64_t out_size, int64_t in_size, int64_t& i0, int64_t& i1, double& frac) {
    double s = (static_cast<double>(i) + 0.5) * static_cast<double>(in_size) / static_cast<double>(out_size) - 0.5;
    if (s < 0) s = 0;
    i0 = std::min<int64_t>(static_cast<int64_t>(std::floor(s)), in_size - 1);
    i1 = std::min<int64_t>(i0 + 1, in_size - 1);
    frac = s - static_cast<double>(i0);
  };
  for (int64_t y = 0; y < H; ++y) {
    int64_t y0, y1;
    double fy;
    source(y, H, b.height, y0, y1, fy);
    for (int64_t x = 0; x < W; ++x) {
      int64_t x0, x1;
      double fx;
      source(x, W, b.width, x0, x1, fx);
      const int64_t ox = b.flip ? W - 1 - x : x;
      for (int64_t c = 0; c < C; ++c) {
        auto at = [&](int64_t r, int64_t q) { return a[c][b.top + r][b.left + q]; };
        o[c][y][ox] =
            (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
      }
    }
  }
  return out;
}

}  // namespace

TEST(AugmentedViews, CropAndResizeMatchesThePerPixelReference) {
  at::Generator g = at::detail::createCPUGenerator(3);
  for (const auto& [C, H, W] :
       std::vector<std::tuple<int64_t, int64_t, int64_t>>{{3, 17, 23}, {1, 9, 9}, {2, 31, 12}}) {
    const at::Tensor image = at::randn({C, H, W}, g, at::kFloat);
    std::mt19937_64 rng(static_cast<uint64_t>(H * W));
    AugmentSettings s;
    s.scale_min = 0.08;
    for (int k = 0; k < 12; ++k) {
      const CropBox b = random_crop_box(H, W, s, rng);
      const at::Tensor got = crop_and_resize(image, b).to(at::kDouble);
      const double err = (got - reference_crop_resize(image, b)).abs().max().item<double>();
      EXPECT_LT(err, 1e-5) << "C " << C << " H " << H << " W " << W << " box " << b.top << "," << b.left << " "
                           << b.height << "x" << b.width << " flip " << b.flip;
    }
  }
}

TEST(AugmentedViews, TheWholeImageUnflippedIsTheImage) {
  at::Generator g = at::detail::createCPUGenerator(5);
  const at::Tensor image = at::randn({3, 13, 19}, g, at::kFloat);
  EXPECT_TRUE(at::allclose(crop_and_resize(image, {0, 0, 13, 19, false}), image, 0, 1e-6));
  EXPECT_TRUE(at::allclose(crop_and_resize(image, {0, 0, 13, 19, true}), image.flip({2}), 0, 1e-6));
}

TEST(AugmentedViews, BoxesLieInsideTheImageWithinTheSettings) {
  AugmentSettings s;
  s.scale_min = 0.3;
  s.scale_max = 0.9;
  std::mt19937_64 rng(11);
  int flipped = 0;
  const int64_t H = 224, W = 224;
  const int draws = 2000;
  for (int k = 0; k < draws; ++k) {
    const CropBox b = random_crop_box(H, W, s, rng);
    ASSERT_GE(b.top, 0);
    ASSERT_GE(b.left, 0);
    ASSERT_LE(b.top + b.height, H);
    ASSERT_LE(b.left + b.width, W);
    const double area = static_cast<double>(b.height * b.width) / static_cast<double>(H * W);
    const double ratio = static_cast<double>(b.width) / static_cast<double>(b.height);
    // Rounding to whole pixels moves the area and ratio a little past the drawn ones.
    EXPECT_GT(area, 0.3 * 0.98);
    EXPECT_LT(area, 0.9 * 1.02);
    EXPECT_GT(ratio, 0.75 * 0.98);
    EXPECT_LT(ratio, 4.0 / 3 * 1.02);
    flipped += b.flip;
  }
  // Binomial(2000, 0.5): 5 standard deviations either side.
  EXPECT_NEAR(flipped, draws / 2, 5 * std::sqrt(draws * 0.25));
}

TEST(AugmentedViews, ImpossibleRatiosFallBackToTheCentredCrop) {
  AugmentSettings s;
  s.ratio_min = 5;
  s.ratio_max = 6;  // a crop 5-6 times wider than high, in a square image: only the fallback fits the area
  s.scale_min = 0.9;
  std::mt19937_64 rng(2);
  const CropBox b = random_crop_box(40, 40, s, rng);
  EXPECT_EQ(b.width, 40);
  EXPECT_EQ(b.height, 8);
  EXPECT_EQ(b.top, 16);
  EXPECT_EQ(b.left, 0);
}

TEST(AugmentedViews, ViewsFollowTheOriginalsAndRepeatWithTheSeed) {
  at::Generator g = at::detail::createCPUGenerator(7);
  const at::Tensor images = at::randn({5, 3, 21, 15}, g, at::kFloat);
  const at::Tensor a = with_augmented_views(images, 2, 42);
  ASSERT_EQ(a.sizes(), (std::vector<int64_t>{15, 3, 21, 15}));
  EXPECT_TRUE(at::equal(a.slice(0, 0, 5), images));
  const auto boxes = augmented_view_boxes(5, 21, 15, 2, 42);
  for (int v = 0; v < 2; ++v)
    for (int64_t n = 0; n < 5; ++n)
      EXPECT_TRUE(at::equal(a[5 * (1 + v) + n], crop_and_resize(images[n], boxes[v][n]))) << v << " " << n;
  EXPECT_TRUE(at::equal(with_augmented_views(images, 2, 42), a));
  EXPECT_FALSE(at::equal(with_augmented_views(images, 2, 43), a));
  EXPECT_TRUE(at::equal(with_augmented_views(images, 0, 42), images));
}

TEST(AugmentedViews, BadInputIsAnError) {
  at::Generator g = at::detail::createCPUGenerator(9);
  const at::Tensor image = at::randn({3, 8, 8}, g, at::kFloat);
  EXPECT_THROW(crop_and_resize(image, {4, 0, 5, 8, false}), Error);
  EXPECT_THROW(crop_and_resize(image, {0, 0, 0, 8, false}), Error);
  EXPECT_THROW(with_augmented_views(image, 1, 0), Error);
  EXPECT_THROW(with_augmented_views(image.unsqueeze(0), -1, 0), Error);
  AugmentSettings bad;
  bad.scale_min = 0;
  std::mt19937_64 rng(1);
  EXPECT_THROW(random_crop_box(8, 8, bad, rng), Error);
}
