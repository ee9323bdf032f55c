// Error-compensating quantization (quant/gptq.h) against a slow, obviously correct reference: float64, the OBS
// update with an explicit inverse of the remaining columns' damped moment, one column at a time. And the properties
// the pipeline relies on: XᵀX = I (or any diagonal) gives nearest rounding; the compensated output error on the
// calibration inputs is below nearest rounding's at every bit width; the low-rank options of a layer compensate
// both factors, and Λ / compressed_weight use the compensated codes.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "lorq/common/error.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/quant/gptq.h"
#include "lorq/quant/quantizer.h"

using namespace lorq;

namespace {

const int kBits[] = {2, 3, 4, 6, 8};

// Inputs with correlated features (what makes compensation matter): rows of N(0, I) mixed by a random matrix, plus
// a few high-variance features.
at::Tensor correlated_inputs(int64_t rows, int64_t n) {
  at::Tensor mix = at::randn({n, n}) / std::sqrt(double(n)) + at::eye(n) * 0.5;
  at::Tensor X = at::mm(at::randn({rows, n}), mix);
  X.select(1, 0).mul_(4.0);
  return X;
}

at::Tensor moment(const at::Tensor& X) { return at::mm(X.t().to(at::kDouble), X.to(at::kDouble)); }

// The slow reference: float64, natural or activation order, one column at a time with the explicit inverse of the
// remaining columns' damped moment: w_rest −= (w_j − q_j) · [H_R⁻¹]_{j,rest} / [H_R⁻¹]_{jj}.
at::Tensor reference_values(const at::Tensor& W, const RowQuantParams& p, const at::Tensor& H_in, double damping,
                            bool act_order) {
  const int64_t m = W.size(0), n = W.size(1);
  at::Tensor H = H_in.to(at::kDouble).clone();
  H = (H + H.t()) / 2;
  for (int64_t j = 0; j < n; ++j)
    if (H[j][j].item<double>() <= 0) H[j][j] = 1.0;
  const double mean = H.diagonal().mean().item<double>();
  std::vector<int64_t> order(n);
  for (int64_t j = 0; j < n; ++j) order[j] = j;
  if (act_order) {
    std::vector<double> d(n);
    for (int64_t j = 0; j < n; ++j) d[j] = H[j][j].item<double>();
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return d[a] > d[b]; });
  }
  H = H + at::eye(n, at::kDouble) * (damping * mean);
  const double qmax = std::pow(2.0, p.bits) - 1;
  at::Tensor w = W.to(at::kDouble).clone();
  at::Tensor V = at::zeros({m, n}, at::kDouble);
  const at::Tensor s = p.scale.to(at::kDouble), z = p.zero_point.to(at::kDouble);
  for (int64_t k = 0; k < n; ++k) {
    std::vector<int64_t> rest(order.begin() + k, order.end());
    const at::Tensor idx = at::tensor(rest, at::kLong);
    const at::Tensor Hinv = at::inverse(H.index_select(0, idx).index_select(1, idx));
    const int64_t j = order[k];
    for (int64_t r = 0; r < m; ++r) {
      const double x = w[r][j].item<double>();
      V[r][j] = x;
      const double sr = s[r].item<double>(), zr = z[r].item<double>();
      const double c = std::min(std::max(std::nearbyint(x / sr) + zr, 0.0), qmax);
      const double err = x - sr * (c - zr);
      for (size_t t = 1; t < rest.size(); ++t)
        w[r][rest[t]] -= err * Hinv[0][t].item<double>() / Hinv[0][0].item<double>();
    }
  }
  return V;
}

at::Tensor codes64(const at::Tensor& V, const RowQuantParams& p) {
  const double qmax = std::pow(2.0, p.bits) - 1;
  return (V / p.scale.to(at::kDouble).unsqueeze(1))
      .round()
      .add(p.zero_point.to(at::kDouble).unsqueeze(1))
      .clamp(0, qmax);
}

}  // namespace

TEST(Gptq, MatchesExplicitInverseReferenceInFloat64) {
  at::manual_seed(7);
  const std::vector<std::pair<int64_t, int64_t>> shapes{{1, 1}, {3, 5}, {7, 13}, {19, 37}, {5, 71}};
  for (auto [m, n] : shapes) {
    for (bool act_order : {false, true}) {
      for (int bits : {2, 4, 8}) {
        const at::Tensor W = at::randn({m, n});
        const at::Tensor H = moment(correlated_inputs(3 * n + 5, n));
        const RowQuantParams p = search_row_ranges(W, bits, RangeError::Plain);
        GptqSettings s;
        s.dtype = at::kDouble;
        s.act_order = act_order;
        s.block = 8;  // several blocks: the lazy updates between blocks are exercised
        const at::Tensor got = gptq_values(W, p, gptq_factorize(H, s), s);
        const at::Tensor want = reference_values(W, p, H, s.damping, act_order);
        const std::string what = std::to_string(m) + "x" + std::to_string(n) + " bits " + std::to_string(bits) +
                                 (act_order ? " act-order" : " natural");
        ASSERT_EQ(got.scalar_type(), at::kDouble) << what;
        EXPECT_TRUE(at::equal(codes64(got, p), codes64(want, p))) << what;
        EXPECT_LT((got - want).abs().max().item<double>(), 1e-8 * (1 + want.abs().max().item<double>())) << what;
      }
    }
  }
}

TEST(Gptq, Float32SweepAgreesWithFloat64) {
  at::manual_seed(8);
  const int64_t m = 33, n = 150;
  const at::Tensor W = at::randn({m, n});
  const at::Tensor H = moment(correlated_inputs(600, n));
  const RowQuantParams p = search_row_ranges(W, 4, RangeError::Plain);
  GptqSettings s64;
  s64.dtype = at::kDouble;
  const at::Tensor v64 = gptq_values(W, p, gptq_factorize(H, s64), s64);
  const at::Tensor v32 = gptq_values(W, p, gptq_factorize(H), {});
  ASSERT_EQ(v32.scalar_type(), at::kFloat);
  // A float32 value within an ulp of a rounding tie may round the other way and change that row's later columns;
  // every other row must give the same codes.
  const at::Tensor c32 = quantize_rows_to_codes(v32, p).to(at::kDouble), c64 = codes64(v64, p);
  const int64_t rows_same = (c32 == c64).all(1).sum().item<int64_t>();
  EXPECT_GE(rows_same, m - 1);
}

TEST(Gptq, CodesAreNearestRoundingOfTheValues) {
  at::manual_seed(9);
  const at::Tensor W = at::randn({21, 45});
  const at::Tensor H = moment(correlated_inputs(200, 45));
  for (int bits : kBits) {
    const RowQuantParams p = search_row_ranges(W, bits, RangeError::Plain);
    const at::Tensor V = gptq_values(W, p, gptq_factorize(H));
    // The sweep's own rounding and the exported codes are the same arithmetic: fake quantization of V is exactly
    // the dequantized codes, and the compensated codes differ from nearest rounding of W.
    EXPECT_TRUE(at::equal(fake_quantize_rows(V, p), dequantize_codes(quantize_rows_to_codes(V, p), p)));
    if (bits <= 4) {
      EXPECT_FALSE(at::equal(quantize_rows_to_codes(V, p), quantize_rows_to_codes(W, p))) << bits;
    }
  }
}

TEST(Gptq, IdentityOrDiagonalMomentGivesNearestRounding) {
  at::manual_seed(10);
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{7, 13}, {30, 200}}) {
    const at::Tensor W = at::randn({m, n});
    for (const at::Tensor& H : {at::eye(n, at::kDouble), at::diag(at::rand({n}, at::kDouble) + 0.1)}) {
      for (int bits : kBits) {
        const RowQuantParams p = search_row_ranges(W, bits, RangeError::Plain);
        const at::Tensor V = gptq_values(W, p, gptq_factorize(H));
        EXPECT_TRUE(at::equal(quantize_rows_to_codes(V, p), quantize_rows_to_codes(W, p))) << m << "x" << n;
        EXPECT_TRUE(at::equal(V, W)) << "no compensation flows without correlation";
      }
    }
  }
}

TEST(Gptq, OutputErrorBelowNearestAtEveryBitWidth) {
  // Per-bit ceilings on (compensated output error) / (nearest rounding's) on the calibration inputs, with margin
  // over what this seed gives; the guarded values may never exceed nearest.
  const double ceiling[] = {0.7, 0.65, 0.6, 0.6, 0.6};
  at::manual_seed(11);
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{31, 67}, {96, 191}}) {
    const at::Tensor X = correlated_inputs(4 * n, n);
    const at::Tensor H = moment(X);
    const at::Tensor W = at::randn({m, n}) * 0.1;
    const GptqFactor f = gptq_factorize(H);
    for (size_t i = 0; i < std::size(kBits); ++i) {
      const RowQuantParams p = search_row_ranges(W, kBits[i], RangeError::Plain);
      const double nearest = output_error(W, fake_quantize_rows(W, p), H);
      const double raw = output_error(W, fake_quantize_rows(gptq_values(W, p, f), p), H);
      bool compensated = false;
      const at::Tensor V = compensated_values(W, p, H, f, {}, &compensated);
      const double guarded = output_error(W, fake_quantize_rows(V, p), H);
      // Directly on the data: Σ‖(W − Ŵ) x‖² over the rows equals the moment form.
      const double direct =
          (at::mm(X.to(at::kDouble), (W - fake_quantize_rows(V, p)).t().to(at::kDouble))).pow(2).sum().item<double>();
      const std::string what = std::to_string(m) + "x" + std::to_string(n) + " bits " + std::to_string(kBits[i]);
      EXPECT_NEAR(direct, guarded, 1e-6 * guarded) << what;
      EXPECT_LE(raw, ceiling[i] * nearest) << what;
      EXPECT_LE(guarded, nearest) << what;
      EXPECT_TRUE(compensated) << what;
    }
  }
}

TEST(Gptq, GuardFallsBackToNearestWhenCompensationLoses) {
  // Judged on H = I, nearest rounding is the best code of every element, so a sweep made for correlated inputs can
  // only lose there: the guard must return W itself (nearest rounding).
  at::manual_seed(12);
  const int64_t m = 9, n = 23;
  const at::Tensor W = at::randn({m, n});
  const RowQuantParams p = search_row_ranges(W, 3, RangeError::Plain);
  const GptqFactor other = gptq_factorize(moment(correlated_inputs(100, n)));
  ASSERT_GT(output_error(W, fake_quantize_rows(gptq_values(W, p, other), p), at::eye(n)),
            output_error(W, fake_quantize_rows(W, p), at::eye(n)));
  bool compensated = true;
  const at::Tensor V = compensated_values(W, p, at::eye(n, at::kDouble), other, {}, &compensated);
  EXPECT_FALSE(compensated);
  EXPECT_TRUE(at::equal(V, W));
}

TEST(Gptq, DeadInputsAndBadInput) {
  at::manual_seed(13);
  const int64_t n = 12;
  at::Tensor X = correlated_inputs(50, n);
  X.select(1, 3).zero_();  // an input that never fires
  const at::Tensor H = moment(X);
  const at::Tensor W = at::randn({5, n});
  const RowQuantParams p = search_row_ranges(W, 3, RangeError::Plain);
  const at::Tensor V = gptq_values(W, p, gptq_factorize(H));
  EXPECT_TRUE(at::isfinite(V).all().item<bool>());
  EXPECT_THROW(gptq_factorize(at::randn({3, 4})), Error);
  EXPECT_THROW(gptq_factorize(at::full({3, 3}, NAN)), Error);
  EXPECT_THROW(gptq_values(W, p, gptq_factorize(at::eye(n + 1))), Error);
  EXPECT_THROW(parse_quantizer("adaround"), Error);
  EXPECT_EQ(parse_quantizer("gptq"), Quantizer::Gptq);
  EXPECT_EQ(parse_quantizer("nearest"), Quantizer::Nearest);
}

TEST(Gptq, LayerCandidatesCompensateEveryOptionAndBothFactors) {
  at::manual_seed(14);
  const int64_t m = 40, n = 27, k = std::min(m, n);
  const at::Tensor X = correlated_inputs(300, n);
  const at::Tensor Hx = moment(X);
  const at::Tensor W = at::randn({m, n}) * 0.2;
  const at::Tensor lfh = at::rand({m, n}) + 0.05;
  CandidateSettings s;
  s.quantizer = Quantizer::Gptq;
  const LayerCandidates g = build_layer_candidates("l", W, lfh, true, s, Hx);
  CandidateSettings sn = s;
  sn.quantizer = Quantizer::Nearest;
  const LayerCandidates nn = build_layer_candidates("l", W, lfh, true, sn, Hx);
  EXPECT_TRUE(nn.weight_values.empty() && nn.a_values.empty() && nn.b_values.empty());
  ASSERT_EQ(g.weight_values.size(), s.bits.size());
  ASSERT_EQ(g.b_values.size(), s.factor_bits.size());
  ASSERT_EQ(g.a_values.size(), s.factor_bits.size() * s.factor_bits.size());
  for (const LayerOption& o : g.options) {
    const at::Tensor Wt = compressed_weight(g, o, W);
    if (o.kind == OptionKind::Quant) {
      // Q(b): the compensated codes, never worse on the calibration inputs than nearest rounding.
      EXPECT_TRUE(at::equal(Wt, fake_quantize_rows(g.weight_values.at(o.bits), g.weight_params.at(o.bits))));
      EXPECT_LE(output_error(W, Wt, Hx), output_error(W, compressed_weight(nn, o, W), Hx)) << o.label();
    } else {
      // LR: Ã_r·B̃_r from the compensated factors (B̃ on x, Ã on B̃x), truncated to the rank.
      const at::Tensor A = fake_quantize_rows(g.a_values.at({o.bits_a, o.bits_b}), g.a_params.at(o.bits_a));
      const at::Tensor B = fake_quantize_rows(g.b_values.at(o.bits_b), g.b_params.at(o.bits_b));
      EXPECT_TRUE(at::allclose(Wt, at::mm(A.slice(1, 0, o.rank), B.slice(0, 0, o.rank)), 1e-5, 1e-6)) << o.label();
    }
  }
  // The full-rank factors: the second factor's compensation targets the first factor's quantized output.
  for (int bb : s.factor_bits) {
    const at::Tensor Bq = fake_quantize_rows(g.b_values.at(bb), g.b_params.at(bb));
    EXPECT_LE(output_error(g.factors.B, Bq, Hx),
              output_error(g.factors.B, fake_quantize_rows(g.factors.B, g.b_params.at(bb)), Hx));
    const at::Tensor Hz = at::mm(at::mm(Bq.to(at::kDouble), Hx), Bq.t().to(at::kDouble));
    for (int ba : s.factor_bits) {
      const at::Tensor Aq = fake_quantize_rows(g.a_values.at({ba, bb}), g.a_params.at(ba));
      EXPECT_LE(output_error(g.factors.A, Aq, Hz),
                output_error(g.factors.A, fake_quantize_rows(g.factors.A, g.a_params.at(ba)), Hz));
      EXPECT_EQ(Aq.size(1), k);
    }
  }
  // Without a moment the layer is rounded to nearest whatever the setting says.
  const LayerCandidates none = build_layer_candidates("l", W, lfh, true, s);
  EXPECT_TRUE(none.weight_values.empty() && none.a_values.empty());
}

TEST(Gptq, RowGridsMatchAPerRowReferenceAndNeverLoseToTheSearchGrid) {
  // compensated_rows against a row-at-a-time reference: each row alone, nearest rounding on the search's grid and
  // GPTQ on every percentile's grid, scored directly on the data X in float64; the row keeps its smallest.
  at::manual_seed(15);
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{7, 19}, {13, 41}}) {
    const at::Tensor X = correlated_inputs(3 * n, n).to(at::kDouble);
    const at::Tensor H = moment(X);
    const at::Tensor W = at::randn({m, n}) * 0.1;
    W.select(0, 1).mul_(5.0);  // one wide row
    const GptqFactor f = gptq_factorize(H);
    for (int bits : {2, 3, 4}) {
      const RowQuantParams searched = search_row_ranges(W, bits, RangeError::Plain);
      const CompensatedRows got = compensated_rows(W, searched, H, f);
      int64_t compensated = 0;
      for (int64_t r = 0; r < m; ++r) {
        const at::Tensor w = W.slice(0, r, r + 1);
        const auto row_params = [&](const RowQuantParams& p) {
          return RowQuantParams{p.scale.slice(0, r, r + 1), p.zero_point.slice(0, r, r + 1), p.bits};
        };
        const auto error = [&](const at::Tensor& w_hat) {
          return at::mm(X, (w - w_hat).t().to(at::kDouble)).pow(2).sum().item<double>();
        };
        double best = error(fake_quantize_rows(w, row_params(searched)));
        at::Tensor best_values = w;
        RowQuantParams best_params = row_params(searched);
        for (double pct : gptq_grid_percentiles()) {
          const RowQuantParams p = search_row_ranges(w, bits, RangeError::Plain, {}, {}, {}, {pct});
          const at::Tensor v = gptq_values(w, p, f);
          const double e = error(fake_quantize_rows(v, p));
          if (e < best * (1 - 1e-9)) {
            best = e;
            best_values = v;
            best_params = p;
          }
        }
        compensated += at::equal(best_values, w) ? 0 : 1;
        const std::string what =
            std::to_string(m) + "x" + std::to_string(n) + " bits " + std::to_string(bits) + " row " + std::to_string(r);
        EXPECT_TRUE(at::allclose(got.values.slice(0, r, r + 1), best_values, 1e-5, 1e-6)) << what;
        EXPECT_FLOAT_EQ(got.params.scale[r].item<float>(), best_params.scale[0].item<float>()) << what;
        EXPECT_FLOAT_EQ(got.params.zero_point[r].item<float>(), best_params.zero_point[0].item<float>()) << what;
      }
      EXPECT_EQ(got.compensated_rows, compensated);
      // Every row's error is at most that of the search's grid, compensated or not (compensated_values).
      const at::Tensor plain = compensated_values(W, searched, H, f);
      const auto row_errors = [&](const at::Tensor& W_hat) {
        const at::Tensor D = (W - W_hat).to(at::kDouble);
        return (at::mm(D, H) * D).sum(1);
      };
      EXPECT_TRUE((row_errors(fake_quantize_rows(got.values, got.params)) <=
                   row_errors(fake_quantize_rows(plain, searched)) * (1 + 1e-9))
                      .all()
                      .item<bool>());
    }
  }
}
