#pragma once
// LFH-weighted SVD and the factor split (spec §4.5): W ≈ A·B with A = D⁻¹U, B = ΣVᵀ where D·W = UΣVᵀ and
// D = diag(sqrt(Σ_j H_cj) + 1e-8). Truncating to rank r gives the best rank-r approximation in ‖D(W − X)‖_F.
#include <ATen/core/Tensor.h>

namespace lorq {

enum class FactorSplit {
  U_SV,  // A = D⁻¹U, B = ΣVᵀ (the spec's default: all of Σ folded into B)
  US_V,  // A = D⁻¹UΣ, B = Vᵀ
};

struct LowRankFactors {
  at::Tensor A;                // [m, k]
  at::Tensor B;                // [k, n]
  at::Tensor singular_values;  // [k] of D·W
  at::Tensor row_weights;      // d [m] (ones for a plain SVD)
  int64_t guarded_rows = 0;    // rows whose weight was floored (zero LFH mass); 0 in parity runs
};

// hessian: the layer's LFH [m, n], or undefined for a plain SVD (D = I). Computed in float32 like the reference.
LowRankFactors weighted_svd(const at::Tensor& W, const at::Tensor& hessian, FactorSplit split = FactorSplit::U_SV);

}  // namespace lorq
