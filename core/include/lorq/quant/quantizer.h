#pragma once
// The weight quantizer (spec §4.1–§4.3): per-row asymmetric uniform quantization, numpy-rule quantiles and the
// per-row percentile range search with the plain (E1), Hessian-weighted (E2) and product-aware (E3) errors.
//
// Numerics: everything runs in float32 as the reference does (Δ, z, x/Δ, the dequantization), with
// round-half-to-even (at::round); quantile positions and interpolation are computed in double from the float32
// order statistics. The search errors are float32 cascade sums (a float64 reduction costs 6x the whole search on
// the CPU), returned as float64. Any device works; the quantile selection itself runs on the CPU.
#include <ATen/core/Tensor.h>

#include <vector>

namespace lorq {

// Per-row asymmetric uniform quantization parameters of a [rows, cols] float tensor.
// scale [rows] float32 (> 0), zero_point [rows] float32 holding integers (not clipped to the code range).
struct RowQuantParams {
  at::Tensor scale;
  at::Tensor zero_point;
  int bits = 8;
};

// q_b(x; Δ, z) = Δ·(clip(round_half_even(x/Δ) + z, 0, 2^b−1) − z), applied per row (Δ, z of row c to all of row
// c). Returns the dequantized ("fake-quantized") float32 tensor of w's shape. bits must be in 1..8.
at::Tensor fake_quantize_rows(const at::Tensor& w, const RowQuantParams& p);

// The integer codes clip(round_half_even(x/Δ) + z, 0, 2^b−1) as uint8, for export.
at::Tensor quantize_rows_to_codes(const at::Tensor& w, const RowQuantParams& p);
// Δ·(code − z) per row as float32. dequantize_codes(quantize_rows_to_codes(w, p), p) equals
// fake_quantize_rows(w, p) bit for bit.
at::Tensor dequantize_codes(const at::Tensor& codes, const RowQuantParams& p);

// Δ = (hi − lo)/(2^b − 1) and z = round_half_even(−lo/Δ) element-wise (lo, hi of any equal shape; usually [rows]),
// in float32. Constant-range guard (§15): where hi == lo = c, Δ = |c| (1 when c = 0), so that a constant row is
// reproduced exactly (c/Δ = ±1, z = ∓1). Throws lorq::Error when hi < lo or either is not finite.
RowQuantParams params_from_range(const at::Tensor& lo, const at::Tensor& hi, int bits);

// quantile(row, p) with the linear-interpolation rule of torch.quantile / numpy.percentile (§4.2), for every row
// of a [rows, cols] tensor: t = p·(cols−1), v_(⌊t⌋) + (t − ⌊t⌋)·(v_(⌊t⌋+1) − v_(⌊t⌋)), evaluated in double from
// the float32 order statistics and rounded to float32. Returns [rows] float32 on w's device. Uses nth_element
// (no full sort), rows in parallel. Throws on p outside [0, 1], an empty row or non-finite values.
at::Tensor row_quantile(const at::Tensor& w, double p);
// All quantiles at once, one multi-selection pass per row: [rows, ps.size()] float32.
at::Tensor row_quantiles(const at::Tensor& w, const std::vector<double>& ps);

// The candidate percentiles P_W of §4.3: {0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995, 0.99999, 1}.
const std::vector<double>& default_percentiles();

enum class RangeError {
  Plain,    // E1: mean_j (v_j − v̂_j)²
  Hessian,  // E2: mean_j h_j (v_j − v̂_j)²
  Product,  // E3: mean_j H_cj (W_cj − Σ_i v̂_i B_ij)², v = row c of factor A, B the float factor
};

// The search's full result: the chosen parameters, which percentile each row chose, and every candidate's error.
struct RowRangeSearch {
  RowQuantParams params;
  at::Tensor choice;  // [rows] int64: index into the percentile list
  at::Tensor error;   // [rows, P] float64 (+inf for a degenerate range hi == lo on a non-constant row)
};

// Per-row percentile range search (§4.3). For each p (in order) the row is clipped to [quantile(1−p), quantile(p)],
// quantized, and scored; each row keeps the p with the strictly smallest error (ties: the earlier p; initial best
// 1e10; a row whose errors are all >= 1e10 keeps its smallest one, the earlier on ties).
//   E1: hessian ignored.   E2: hessian [rows, cols] required.
//   E3: w is the factor A [m, k], target is W [m, n], complement the float factor B [k, n], hessian W's LFH
//       [m, n] or undefined for the plain-MSE variant (H ≡ 1). One [m,k]x[k,n] product per percentile.
// Percentiles must lie in [0.5, 1]. A candidate whose range collapses (hi == lo) on a non-constant row is never
// chosen (the reference divides by zero there); constant rows (all-zero included) get the guarded Δ of
// params_from_range and are reproduced exactly.
RowQuantParams search_row_ranges(const at::Tensor& w, int bits, RangeError kind, const at::Tensor& hessian = {},
                                 const at::Tensor& target = {}, const at::Tensor& complement = {},
                                 const std::vector<double>& percentiles = default_percentiles());
RowRangeSearch search_row_ranges_detailed(const at::Tensor& w, int bits, RangeError kind,
                                          const at::Tensor& hessian = {}, const at::Tensor& target = {},
                                          const at::Tensor& complement = {},
                                          const std::vector<double>& percentiles = default_percentiles());

}  // namespace lorq
