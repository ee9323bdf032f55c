#include "lorq/quant/gptq.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

const char* quantizer_name(Quantizer q) { return q == Quantizer::Gptq ? "gptq" : "nearest"; }

Quantizer parse_quantizer(const std::string& name) {
  if (name == "nearest") return Quantizer::Nearest;
  if (name == "gptq") return Quantizer::Gptq;
  throw Error("unknown quantizer '" + name + "' (expected nearest or gptq)");
}

GptqFactor gptq_factorize(const at::Tensor& H_in, const GptqSettings& s) {
  if (!H_in.defined() || H_in.dim() != 2 || H_in.size(0) != H_in.size(1))
    throw Error("gptq: the input second moment must be a square matrix");
  if (!(s.damping >= 0) || s.block < 1) throw Error("gptq: damping must be >= 0 and the block at least 1");
  at::Tensor H = H_in.to(at::kCPU, at::kDouble);
  if (!at::isfinite(H).all().item<bool>()) throw Error("gptq: the input second moment holds non-finite values");
  H = H.add(H.t()).mul_(0.5);  // exactly symmetric
  const int64_t n = H.size(0);
  GptqFactor f;
  if (n == 0) {
    f.order = at::empty({0}, at::kLong);
    f.U = at::empty({0, 0}, at::TensorOptions().dtype(s.dtype));
    return f;
  }
  at::Tensor diag = H.diagonal();
  diag.masked_fill_(diag <= 0, 1.0);  // dead inputs: their error reaches no output, any positive value will do
  const double mean = diag.mean().item<double>();
  f.order = s.act_order ? std::get<1>(at::sort(diag, /*stable=*/true, 0, /*descending=*/true))
                        : at::arange(n, at::TensorOptions().dtype(at::kLong));
  at::Tensor Hp = H.index_select(0, f.order).index_select(1, f.order);
  // Damping; more where rounding in float64 still leaves the matrix indefinite (rank-deficient H, λ = 0).
  double lambda = s.damping * mean;
  for (int attempt = 0;; ++attempt) {
    at::Tensor Hd = Hp.clone();
    Hd.diagonal().add_(lambda);
    auto [L, info] = at::linalg_cholesky_ex(Hd);
    if (info.item<int64_t>() == 0) {
      const at::Tensor Hinv = at::cholesky_inverse(L);
      auto [U, info2] = at::linalg_cholesky_ex(Hinv, /*upper=*/true);
      if (info2.item<int64_t>() == 0) {
        f.U = U.to(s.dtype).contiguous();
        return f;
      }
    }
    if (attempt >= 8) throw Error("gptq: the input second moment cannot be factorised even with damping");
    lambda = std::max(lambda * 10.0, 1e-6 * mean);
  }
}

namespace {

template <typename T>
void sweep(T* w, T* v, T* e, const T* U, int64_t n, int64_t i1, int64_t i2, T scale, T zero, T qmax) {
  for (int64_t i = i1; i < i2; ++i) {
    const T x = w[i];
    v[i] = x;
    // The quantizer's own arithmetic (quantizer.cpp): round half to even of x/Δ, + z, clip, − z, · Δ.
    T c = std::nearbyint(x / scale) + zero;
    c = std::min(std::max(c, T(0)), qmax);
    const T q = (c - zero) * scale;
    const T err = (x - q) / U[i * n + i];
    e[i - i1] = err;
    const T* u = U + i * n;
    for (int64_t j = i + 1; j < i2; ++j) w[j] -= err * u[j];
  }
}

template <typename T>
at::Tensor gptq_values_t(const at::Tensor& W, const RowQuantParams& p, const GptqFactor& f, const GptqSettings& s) {
  const int64_t m = W.size(0), n = W.size(1);
  const auto opts = at::TensorOptions().dtype(W.scalar_type());
  at::Tensor Wp = W.index_select(1, f.order).contiguous();  // working copy, processing order
  at::Tensor V = at::empty({m, n}, opts);
  const int64_t B = std::min<int64_t>(s.block, std::max<int64_t>(n, 1));
  at::Tensor E = at::empty({m, B}, opts);
  const at::Tensor scale = p.scale.to(at::kCPU).to(W.scalar_type()).contiguous();
  const at::Tensor zero = p.zero_point.to(at::kCPU).to(W.scalar_type()).contiguous();
  const T qmax = static_cast<T>((int64_t{1} << p.bits) - 1);
  const T* U = f.U.data_ptr<T>();
  T* wp = Wp.data_ptr<T>();
  T* vp = V.data_ptr<T>();
  T* ep = E.data_ptr<T>();
  const T* sp = scale.data_ptr<T>();
  const T* zp = zero.data_ptr<T>();
  for (int64_t i1 = 0; i1 < n; i1 += B) {
    const int64_t i2 = std::min(n, i1 + B);
    at::parallel_for(0, m, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) sweep<T>(wp + r * n, vp + r * n, ep + r * B, U, n, i1, i2, sp[r], zp[r], qmax);
    });
    // The block's errors reach the later columns in one product (the lazy update).
    if (i2 < n)
      Wp.slice(1, i2, n).addmm_(E.slice(1, 0, i2 - i1), f.U.slice(0, i1, i2).slice(1, i2, n), /*beta=*/1,
                                /*alpha=*/-1);
  }
  at::Tensor out = at::empty({m, n}, opts);
  out.index_copy_(1, f.order, V);
  return out;
}

}  // namespace

at::Tensor gptq_values(const at::Tensor& W_in, const RowQuantParams& p, const GptqFactor& f, const GptqSettings& s) {
  if (!W_in.defined() || W_in.dim() != 2) throw Error("gptq: the weight must be a matrix");
  const int64_t m = W_in.size(0), n = W_in.size(1);
  if (!f.U.defined() || f.U.dim() != 2 || f.U.size(0) != n || f.order.numel() != n)
    throw Error("gptq: the factorisation has " + std::to_string(f.order.numel()) + " columns, the weight " +
                std::to_string(n));
  if (f.U.scalar_type() != s.dtype) throw Error("gptq: the factorisation was made for another data type");
  if (p.bits < 1 || p.bits > 8 || !p.scale.defined() || !p.zero_point.defined() || p.scale.numel() != m ||
      p.zero_point.numel() != m)
    throw Error("gptq: the grids must give one scale and zero-point per row and 1..8 bits");
  if (!(at::isfinite(p.scale).all().item<bool>() && (p.scale > 0).all().item<bool>()))
    throw Error("gptq: scales must be finite and > 0");
  const at::Tensor W = W_in.to(at::kCPU, s.dtype).contiguous();
  if (s.dtype == at::kDouble) return gptq_values_t<double>(W, p, f, s).to(W_in.device());
  if (s.dtype == at::kFloat) return gptq_values_t<float>(W, p, f, s).to(W_in.device());
  throw Error("gptq: the sweep runs in float32 or float64");
}

double output_error(const at::Tensor& W, const at::Tensor& W_hat, const at::Tensor& H) {
  const at::Tensor D = W.to(at::kDouble) - W_hat.to(at::kDouble);
  return (at::mm(D, H.to(at::kDouble)) * D).sum().item<double>();
}

at::Tensor compensated_values(const at::Tensor& W, const RowQuantParams& p, const at::Tensor& H, const GptqFactor& f,
                              const GptqSettings& s, bool* compensated) {
  GptqSettings s32 = s;
  s32.dtype = at::kFloat;
  const GptqFactor f32{f.order, f.U.to(at::kFloat).contiguous()};
  const at::Tensor W32 = W.to(at::kFloat).contiguous();
  at::Tensor V = gptq_values(W32, p, f32, s32);
  const bool better =
      output_error(W32, fake_quantize_rows(V, p), H) <= output_error(W32, fake_quantize_rows(W32, p), H);
  if (compensated) *compensated = better;
  return better ? V : W32;
}

const std::vector<double>& gptq_grid_percentiles() {
  static const std::vector<double> p{0.96, 0.97, 0.98, 0.99, 0.995, 0.9995, 1.0};
  return p;
}

CompensatedRows compensated_rows(const at::Tensor& W, const RowQuantParams& nearest, const at::Tensor& H,
                                 const GptqFactor& f, const GptqSettings& s, const std::vector<double>& percentiles) {
  GptqSettings s32 = s;
  s32.dtype = at::kFloat;
  const GptqFactor f32{f.order, f.U.to(at::kFloat).contiguous()};
  const at::Tensor W32 = W.to(at::kFloat).contiguous();
  const at::Tensor Hd = H.to(at::kDouble);
  // Each row's output error (D H Dᵀ)_rr of the dequantized Ŵ.
  const auto row_errors = [&](const at::Tensor& W_hat) {
    const at::Tensor D = W32.to(at::kDouble) - W_hat.to(at::kDouble);
    return (at::mm(D, Hd) * D).sum(1);
  };
  CompensatedRows out;
  out.params = {nearest.scale.to(at::kFloat).clone(), nearest.zero_point.to(at::kFloat).clone(), nearest.bits};
  out.values = W32.clone();
  at::Tensor best = row_errors(fake_quantize_rows(W32, nearest));
  at::Tensor from_gptq = at::zeros({W32.size(0)}, at::kBool);
  for (double pct : percentiles) {
    const RowQuantParams p = search_row_ranges(W32, nearest.bits, RangeError::Plain, {}, {}, {}, {pct});
    const at::Tensor V = gptq_values(W32, p, f32, s32);
    const at::Tensor e = row_errors(fake_quantize_rows(V, p));
    const at::Tensor better = e < best;
    best = at::where(better, e, best);
    from_gptq.logical_or_(better);
    out.params.scale = at::where(better, p.scale, out.params.scale);
    out.params.zero_point = at::where(better, p.zero_point, out.params.zero_point);
    out.values = at::where(better.unsqueeze(1), V, out.values);
  }
  out.compensated_rows = from_gptq.sum().item<int64_t>();
  return out;
}

}  // namespace lorq
