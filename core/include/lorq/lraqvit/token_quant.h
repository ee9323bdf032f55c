#pragma once
// LRA-QViT's quantizers (spec §4.3): dynamic per-token activation quantization (one scale per token row, computed
// from the row itself at run time) and per-output-channel weight quantization.
//
// Numerics, so that a scalar reference reproduces the kernel bit for bit: everything in float32; a row's scale is
// Δ = max|x| / (2^(b−1) − 1) (symmetric) or Δ = (max(x, 0) − min(x, 0)) / (2^b − 1) with z = round(−lo/Δ)
// (asymmetric); codes are round-half-to-even(x/Δ) (+ z), clipped; the output is Δ·code (or Δ·(code − z)). An
// all-zero row gets Δ = 1 and is reproduced exactly.
#include <ATen/core/Tensor.h>

#include <string>

#include "lorq/quant/quantizer.h"

namespace lorq::lraqvit {

enum class TokenQuantMode {
  Symmetric,   // [G] default: one scale per row, codes in [−(2^(b−1)−1), 2^(b−1)−1] (no zero-point)
  Asymmetric,  // one scale and one integer zero-point per row, codes in [0, 2^b−1]; zero stays exact
};

struct TokenQuantizer {
  int bits = 8;  // 8 by default; 4 and 6 are the other supported widths (any of 2..8 works)
  TokenQuantMode mode = TokenQuantMode::Symmetric;
};

std::string to_string(TokenQuantMode mode);
// "sym" | "asym". Throws lorq::Error for anything else.
TokenQuantMode token_quant_mode_from_string(const std::string& s);

// Fake-quantizes every row of x (its last dimension; any leading dimensions, float32) with its own dynamic scale.
// Returns a new float32 tensor of x's shape; no autograd. Rows run in parallel on LibTorch's threads.
// Throws lorq::Error when bits is outside 2..8 or x is not float32.
at::Tensor fake_quantize_per_token(const at::Tensor& x, const TokenQuantizer& q);

// The same value with a straight-through gradient (d out / d x = identity), for training through the quantizer.
at::Tensor fake_quantize_per_token_ste(const at::Tensor& x, const TokenQuantizer& q);

// Per-output-channel weight quantization: MLoRQ's per-row asymmetric quantizer (lorq/quant/quantizer.h) on the
// row's full range [min(w_row, 0), max(w_row, 0)], so the codes export like MLoRQ's.
RowQuantParams per_channel_weight_params(const at::Tensor& w, int bits);
at::Tensor fake_quantize_per_channel(const at::Tensor& w, int bits);  // dequantized, w's shape
// With a straight-through gradient (ranges recomputed from w, not differentiated).
at::Tensor fake_quantize_per_channel_ste(const at::Tensor& w, int bits);

// y = Q_tok(x)·W̃ᵀ + b: what a quantized linear layer computes at inference, with W̃ already dequantized.
at::Tensor token_quantized_linear(const at::Tensor& x, const at::Tensor& w_tilde, const at::Tensor& b,
                                  const TokenQuantizer& q);

}  // namespace lorq::lraqvit
