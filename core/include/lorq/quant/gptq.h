#pragma once
// Error-compensating quantization (GPTQ, Frantar et al. 2022) on the per-row grids of quantizer.h.
//
// A layer y = W x is quantized column by column (input feature by input feature). After column j is rounded to
// its grid, its rounding error is spread over the columns not yet rounded so that the layer's output on the
// calibration inputs X changes as little as possible: with H = XᵀX (damped) and U the upper Cholesky factor of
// H⁻¹ in processing order, the optimal update of the remaining columns is w_{j+1:} −= (w_j − q_j)/U_jj · U_{j,j+1:}
// (the OBS step; U's rows are the rows of the successive sub-inverses). Updates are applied lazily: inside a block
// of columns one row at a time, to the columns after the block with one matrix product per block.
//
// Every row is independent (one shared U), so the grids (per-row Δ, z from the range search) stay fixed and the
// output is an ordinary per-row quantized tensor: the *compensated values* V whose nearest rounding is the code
// (quantize_rows_to_codes(V, p) are the codes, fake_quantize_rows(V, p) the dequantized tensor). Export, rounding
// and adaptive rounding (which starts from V's fractional parts, i.e. from the compensated codes) need no change.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "lorq/quant/quantizer.h"

namespace lorq {

enum class Quantizer {
  Nearest,  // nearest rounding of W on each row's grid
  Gptq,     // error-compensating rounding (this file)
};
const char* quantizer_name(Quantizer q);             // "nearest", "gptq"
Quantizer parse_quantizer(const std::string& name);  // throws lorq::Error on another name

struct GptqSettings {
  double damping = 0.01;  // H + damping·mean(diag H)·I, which keeps the Cholesky factorisation defined
  int64_t block = 128;    // columns per lazy-update block
  bool act_order = true;  // columns in descending diag(H) (the most active inputs first)
  // W's rows choose their grid for the compensation (compensated_rows) at up to these bits; above, and at 0, the
  // range search's grid for nearest rounding is kept. On DeiT-Tiny (128 moment images) the choice bought 3 points
  // of top-1 at uniform Q3 and none at Q4 (uniform Q4 1.3 points lower, within the noise of 372 images), at the
  // cost of one GPTQ sweep per percentile and bit width.
  int row_grid_max_bits = 3;
  // The data type of the sweep: float32 as the rest of the quantizer; float64 for tests against the reference.
  at::ScalarType dtype = at::kFloat;
};

// What every bit width of one layer (and the first factor of its low-rank options) shares: the processing order and
// the Cholesky factor of the damped inverse.
struct GptqFactor {
  at::Tensor order;  // [n] int64: processing position -> column
  at::Tensor U;      // [n, n] upper triangular, (H + λI)⁻¹ = UᵀU in processing order, of settings.dtype
};

// H: [n, n] symmetric positive semi-definite (XᵀX of the layer's inputs; its scale does not matter). Columns with
// H_jj = 0 (inputs that are always zero) get H_jj = 1: their rounding error reaches no output. Throws lorq::Error
// on a non-square or non-finite H. `act_order` false keeps the natural column order.
GptqFactor gptq_factorize(const at::Tensor& H, const GptqSettings& settings = {});

// The compensated values V [rows, n] (of settings.dtype) of W [rows, n] on the grids p (bits, per-row Δ, z).
at::Tensor gptq_values(const at::Tensor& W, const RowQuantParams& p, const GptqFactor& f,
                       const GptqSettings& settings = {});

// The output error of replacing W by Ŵ on inputs with second moment H: tr((W − Ŵ) H (W − Ŵ)ᵀ) = Σ‖(W − Ŵ)x‖²
// over the calibration rows when H = XᵀX. float64.
double output_error(const at::Tensor& W, const at::Tensor& W_hat, const at::Tensor& H);

// The values to round on grid p: GPTQ's, unless their output error on H exceeds nearest rounding's (GPTQ is greedy
// and, with clipped grids, can lose), in which case W itself (nearest rounding). `compensated` (optional) says which.
at::Tensor compensated_values(const at::Tensor& W, const RowQuantParams& p, const at::Tensor& H, const GptqFactor& f,
                              const GptqSettings& settings = {}, bool* compensated = nullptr);

// The clip percentiles compensated_rows tries by default. On DeiT-Tiny's Q2 and Q3 (all ten of
// default_percentiles() tried) GPTQ's rows chose 0.97-0.995 for 85 % of the rows, 0.97 most often at 2 bits, and
// the four percentiles between 0.9995 and 1 (nearly the same grid on rows of 192 or 768 weights) for 4 %: those
// collapse to 0.9995 here and 0.96 extends the clipping side.
const std::vector<double>& gptq_grid_percentiles();

// Compensated values on grids chosen for the compensation: each row takes, of nearest rounding of W on `nearest`
// (the range search's grid for nearest rounding) and GPTQ on the grid of every candidate percentile (the range
// search's clip ranges, quantizer.h), the one whose own output error (D H Dᵀ)_rr is smallest (rows are independent
// under one factorisation, so rows may mix). The search's grid suits nearest rounding; GPTQ carries each column's
// rounding error forward, and on DeiT-Tiny its rows mostly preferred tighter clipping.
struct CompensatedRows {
  RowQuantParams params;  // per-row grids
  at::Tensor values;      // [rows, n] float32: W's row where nearest rounding won, GPTQ's values elsewhere
  int64_t compensated_rows = 0;
};
CompensatedRows compensated_rows(const at::Tensor& W, const RowQuantParams& nearest, const at::Tensor& H,
                                 const GptqFactor& f, const GptqSettings& settings = {},
                                 const std::vector<double>& percentiles = gptq_grid_percentiles());

}  // namespace lorq
