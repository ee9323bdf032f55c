// Adaptive rounding with readout rows (RoundingSettings::readout_share): the loss it reports against a float64
// evaluation of its formula on odd sizes, learning that weights the readout rows reconstructs them better than
// learning that does not, and bad readout rows as errors.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>

#include "lorq/common/error.h"
#include "lorq/quant/adaptive_rounding.h"

using namespace lorq;

namespace {

CompressedLayer quant_layer(const at::Tensor& W, int bits) {
  CompressedLayer c;
  c.layer = "layer";
  c.form = LayerForm::Quant;
  c.option.kind = OptionKind::Quant;
  c.option.bits = bits;
  c.weight = QuantizedTensor::nearest(W, search_row_ranges(W, bits, RangeError::Plain));
  return c;
}

// Rows whose energy lies in columns [begin, end) (the others scaled down to 5 %).
at::Tensor rows_in(int64_t rows, int64_t n, int64_t begin, int64_t end, at::Generator& g) {
  at::Tensor scale = at::full({n}, 0.05f);
  scale.slice(0, begin, end).fill_(1.0f);
  return at::randn({rows, n}, g, at::kFloat) * scale;
}

// mean over rows and outputs of (x W̃ᵀ + b − y)², in float64 one element at a time.
double slow_mse(const at::Tensor& X, const at::Tensor& Wt, const at::Tensor& b, const at::Tensor& Y) {
  const auto x = X.to(at::kDouble).contiguous(), w = Wt.to(at::kDouble).contiguous(), bb = b.to(at::kDouble);
  const auto y = Y.to(at::kDouble).contiguous();
  double sum = 0;
  for (int64_t r = 0; r < x.size(0); ++r)
    for (int64_t o = 0; o < w.size(0); ++o) {
      double v = bb[o].item<double>();
      for (int64_t i = 0; i < w.size(1); ++i) v += x[r][i].item<double>() * w[o][i].item<double>();
      const double d = v - y[r][o].item<double>();
      sum += d * d;
    }
  return sum / double(x.size(0) * w.size(0));
}

}  // namespace

TEST(RoundingReadout, LossIsTheSharedMeanOfBothRowSets) {
  at::Generator g = at::detail::createCPUGenerator(2);
  const int64_t m = 7, n = 13;
  const CompressedLayer layer = quant_layer(at::randn({m, n}, g, at::kFloat), 3);
  const at::Tensor b = at::randn({m}, g, at::kFloat);
  rounding::LayerRoundingData d{at::randn({19, n}, g, at::kFloat), at::randn({19, m}, g, at::kFloat),
                                at::randn({5, n}, g, at::kFloat), at::randn({5, m}, g, at::kFloat)};
  const at::Tensor Wt = layer.dequantized_weight();
  const double plain = slow_mse(d.X, Wt, b, d.Y), readout = slow_mse(d.readout_X, Wt, b, d.readout_Y);
  for (double share : {0.0, 0.3, 1.0})
    EXPECT_NEAR(rounding::reconstruction_loss(layer, b, d, share), (1 - share) * plain + share * readout, 1e-5 * plain);
  // Without readout rows the share does not apply.
  const rounding::LayerRoundingData no_readout{d.X, d.Y, {}, {}};
  EXPECT_NEAR(rounding::reconstruction_loss(layer, b, no_readout, 0.7), plain, 1e-5 * plain);
}

TEST(RoundingReadout, WeightedReadoutRowsAreReconstructedBetter) {
  RoundingSettings s;
  s.iterations = 300;
  s.rows_per_step = 256;
  s.keep_nearest_if_worse = false;  // judge the learning itself
  int better = 0;
  for (uint64_t seed : {1, 2, 3}) {
    at::Generator g = at::detail::createCPUGenerator(seed);
    const int64_t m = 13, n = 23;
    const at::Tensor W = at::randn({m, n}, g, at::kFloat) * 0.1;
    // The many sampled rows live in the first 12 inputs, the few readout rows in the other 11: without their
    // weight, the readout rows' columns are rounded for rows that barely use them.
    rounding::LayerRoundingData d;
    d.X = rows_in(800, n, 0, 12, g);
    d.readout_X = rows_in(48, n, 12, n, g);
    d.Y = at::mm(d.X, W.t());
    d.readout_Y = at::mm(d.readout_X, W.t());
    double readout_error[2] = {0, 0};
    double start = 0;
    for (int k = 0; k < 2; ++k) {
      CompressedLayer layer = quant_layer(W, 3);
      start = rounding::reconstruction_error(layer, {}, d.readout_X, d.readout_Y);
      s.readout_share = k == 0 ? 0.0 : 0.5;
      const LayerRoundingResult r = rounding::learn_layer(layer, {}, d, s);
      EXPECT_NEAR(r.learned_error, rounding::reconstruction_loss(layer, {}, d, s.readout_share),
                  1e-6 * r.learned_error);
      readout_error[k] = rounding::reconstruction_error(layer, {}, d.readout_X, d.readout_Y);
    }
    std::printf("seed %llu: readout rows' error: nearest %.4g, share 0 %.4g, share 0.5 %.4g\n",
                static_cast<unsigned long long>(seed), start, readout_error[0], readout_error[1]);
    EXPECT_LT(readout_error[1], start) << "seed " << seed;
    better += readout_error[1] < readout_error[0];
  }
  EXPECT_EQ(better, 3);
}

TEST(RoundingReadout, MismatchedReadoutRowsAreErrors) {
  at::Generator g = at::detail::createCPUGenerator(9);
  CompressedLayer layer = quant_layer(at::randn({5, 8}, g, at::kFloat), 4);
  rounding::LayerRoundingData d{at::randn({20, 8}, g, at::kFloat), at::randn({20, 5}, g, at::kFloat),
                                at::randn({4, 7}, g, at::kFloat), at::randn({4, 5}, g, at::kFloat)};
  RoundingSettings s;
  s.iterations = 2;
  EXPECT_THROW(rounding::learn_layer(layer, {}, d, s), Error);
  d.readout_X = at::randn({4, 8}, g, at::kFloat);
  s.readout_share = 1.5;
  EXPECT_THROW(rounding::learn_layer(layer, {}, d, s), Error);
  s.readout_share = 0.5;
  EXPECT_NO_THROW(rounding::learn_layer(layer, {}, d, s));
}
