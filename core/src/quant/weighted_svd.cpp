#include "lorq/quant/weighted_svd.h"

#include <ATen/ATen.h>

#include "lorq/common/error.h"

namespace lorq {

LowRankFactors weighted_svd(const at::Tensor& W_in, const at::Tensor& hessian, FactorSplit split) {
  if (W_in.dim() != 2) throw Error("weighted_svd: the weight must be a matrix");
  const at::Tensor W = W_in.to(at::kFloat).contiguous();
  const int64_t m = W.size(0);
  LowRankFactors f;
  if (hessian.defined()) {
    if (hessian.sizes() != W.sizes()) throw Error("weighted_svd: the LFH shape differs from the weight's");
    at::Tensor d = at::sqrt(hessian.to(at::kFloat).sum(1)) + 1e-8f;
    // A channel with (almost) no LFH mass would get a 1e8-scaled row in A; floor its weight (spec §15). The floor
    // is 1e-4 of the largest weight rather than the spec's suggested 1e-6: at 1e-6 the row drowns in fp32 SVD
    // noise and even the full-rank product misses it by several percent.
    const float floor = 1e-4f * d.max().item<float>();
    at::Tensor low = d < floor;
    f.guarded_rows = low.sum().item<int64_t>();
    if (f.guarded_rows > 0) d = at::where(low, at::full_like(d, floor), d);
    f.row_weights = d;
  } else {
    f.row_weights = at::ones({m});
  }
  const at::Tensor& d = f.row_weights;
  // SVD of the tall orientation is faster in LAPACK here; transpose wide matrices and swap the factors back.
  at::Tensor DW = W * d.unsqueeze(1);
  at::Tensor U, S, Vh;
  if (DW.size(0) < DW.size(1)) {
    auto [u, s, vh] = at::linalg_svd(DW.t(), /*full_matrices=*/false);
    U = vh.t();
    S = s;
    Vh = u.t();
  } else {
    std::tie(U, S, Vh) = at::linalg_svd(DW, /*full_matrices=*/false);
  }
  f.singular_values = S;
  at::Tensor Dinv_U = U / d.unsqueeze(1);
  if (split == FactorSplit::U_SV) {
    f.A = Dinv_U.contiguous();
    f.B = (S.unsqueeze(1) * Vh).contiguous();
  } else {
    f.A = (Dinv_U * S.unsqueeze(0)).contiguous();
    f.B = Vh.contiguous();
  }
  return f;
}

}  // namespace lorq
