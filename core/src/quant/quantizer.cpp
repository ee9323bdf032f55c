#include "lorq/quant/quantizer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

namespace {

// Elements of one batched candidate tensor ([percentiles, rows, cols]) in the search; larger batches are split.
constexpr int64_t kSearchBatchElements = int64_t{1} << 22;

void check_bits(int bits, const char* what) {
  if (bits < 1 || bits > 8) throw Error(std::string(what) + ": bits must be in 1..8, got " + std::to_string(bits));
}

int64_t qmax_of(int bits) { return (int64_t{1} << bits) - 1; }

std::string shape_str(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

// w as a float32 [rows, cols] tensor.
at::Tensor as_matrix(const at::Tensor& w, const char* what, const char* name = "w") {
  if (!w.defined()) throw Error(std::string(what) + ": " + name + " is undefined");
  if (w.dim() != 2) throw Error(std::string(what) + ": " + name + " must be 2-D, got " + shape_str(w));
  if (!at::isFloatingType(w.scalar_type())) throw Error(std::string(what) + ": " + name + " must be floating point");
  return w.to(at::kFloat);
}

// Δ and z of p as float32 [rows, 1] columns on `device`, validated.
std::pair<at::Tensor, at::Tensor> row_columns(const RowQuantParams& p, int64_t rows, const at::Device& device,
                                              const char* what) {
  check_bits(p.bits, what);
  if (!p.scale.defined() || !p.zero_point.defined()) throw Error(std::string(what) + ": parameters are undefined");
  if (p.scale.dim() != 1 || p.scale.size(0) != rows || p.zero_point.dim() != 1 || p.zero_point.size(0) != rows)
    throw Error(std::string(what) + ": scale " + shape_str(p.scale) + " and zero_point " + shape_str(p.zero_point) +
                " must both be [" + std::to_string(rows) + "]");
  at::Tensor s = p.scale.to(device, at::kFloat).unsqueeze(1);
  at::Tensor z = p.zero_point.to(device, at::kFloat).unsqueeze(1);
  if (rows > 0 &&
      !(at::isfinite(s).all().item<bool>() && (s > 0).all().item<bool>() && at::isfinite(z).all().item<bool>()))
    throw Error(std::string(what) + ": scales must be finite and > 0, zero-points finite");
  return {s, z};
}

// Δ·(clip(round(x/Δ) + z, 0, qmax) − z) for broadcastable x, Δ, z, written into `out` (already of the broadcast
// shape; reusing one buffer matters: fresh multi-megabyte tensors cost more in page faults than the arithmetic).
at::Tensor& fake_quantize_into(at::Tensor& out, const at::Tensor& x, const at::Tensor& s, const at::Tensor& z,
                               int bits) {
  at::div_out(out, x, s);
  out.round_().add_(z).clamp_(0.0, static_cast<double>(qmax_of(bits)));
  return out.sub_(z).mul_(s);
}

// Puts the order statistics at the (sorted, unique, absolute) positions [ib, ie) of base into place, all lying in
// [first, last): nth_element on the median position, then each side on its own part.
void multiselect(float* base, float* first, float* last, const int64_t* ib, const int64_t* ie) {
  while (ib != ie) {
    const int64_t* mid = ib + (ie - ib) / 2;
    float* nth = base + *mid;
    std::nth_element(first, nth, last);
    multiselect(base, first, nth, ib, mid);
    first = nth + 1;
    ib = mid + 1;
  }
}

}  // namespace

at::Tensor fake_quantize_rows(const at::Tensor& w, const RowQuantParams& p) {
  const at::Tensor x = as_matrix(w, "fake_quantize_rows");
  const auto [s, z] = row_columns(p, x.size(0), x.device(), "fake_quantize_rows");
  at::Tensor out = at::empty_like(x);
  return fake_quantize_into(out, x, s, z, p.bits);
}

at::Tensor quantize_rows_to_codes(const at::Tensor& w, const RowQuantParams& p) {
  const at::Tensor x = as_matrix(w, "quantize_rows_to_codes");
  const auto [s, z] = row_columns(p, x.size(0), x.device(), "quantize_rows_to_codes");
  at::Tensor q = at::div(x, s);
  q.round_().add_(z).clamp_(0.0, static_cast<double>(qmax_of(p.bits)));
  return q.to(at::kByte);
}

at::Tensor dequantize_codes(const at::Tensor& codes, const RowQuantParams& p) {
  if (!codes.defined() || codes.dim() != 2 || codes.scalar_type() != at::kByte)
    throw Error("dequantize_codes: codes must be a 2-D uint8 tensor");
  const auto [s, z] = row_columns(p, codes.size(0), codes.device(), "dequantize_codes");
  return codes.to(at::kFloat).sub_(z).mul_(s);
}

RowQuantParams params_from_range(const at::Tensor& lo, const at::Tensor& hi, int bits) {
  check_bits(bits, "params_from_range");
  if (!lo.defined() || !hi.defined() || lo.sizes() != hi.sizes())
    throw Error("params_from_range: lo and hi must be defined and of one shape");
  const at::Tensor l = lo.to(at::kFloat), h = hi.to(at::kFloat);
  if (!(at::isfinite(l).all().item<bool>() && at::isfinite(h).all().item<bool>()))
    throw Error("params_from_range: the range holds non-finite values");
  if ((h < l).any().item<bool>()) throw Error("params_from_range: hi < lo in some row");
  at::Tensor delta = at::sub(h, l).div_(static_cast<double>(qmax_of(bits)));
  if (!at::isfinite(delta).all().item<bool>()) throw Error("params_from_range: range too wide for float32");
  // Guard (§15): a collapsed range (hi == lo, or a width that underflows) would divide by zero.
  const at::Tensor collapsed = delta <= 0;
  if (collapsed.any().item<bool>()) {
    at::Tensor mag = at::maximum(l.abs(), h.abs());
    mag = at::where(mag > 0, mag, at::ones_like(mag));
    delta = at::where(collapsed, mag, delta);
  }
  RowQuantParams p;
  p.bits = bits;
  p.zero_point = at::neg(l).div_(delta).round_();
  p.scale = delta;
  return p;
}

at::Tensor row_quantiles(const at::Tensor& w, const std::vector<double>& ps) {
  const at::Tensor x = as_matrix(w, "row_quantile").to(at::kCPU).contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  const int64_t P = static_cast<int64_t>(ps.size());
  for (double p : ps)
    if (!(p >= 0.0 && p <= 1.0)) throw Error("row_quantile: p must be in [0, 1], got " + std::to_string(p));
  if (rows == 0) return at::empty({0, P}, w.options().dtype(at::kFloat));
  if (cols == 0) throw Error("row_quantile: rows are empty");
  // Positions t = p·(cols−1): the lower index, its fraction, and the sorted set of order statistics needed.
  std::vector<int64_t> lower(P);
  std::vector<double> frac(P);
  std::vector<int64_t> needed;
  for (int64_t i = 0; i < P; ++i) {
    const double t = ps[i] * static_cast<double>(cols - 1);
    lower[i] = std::min<int64_t>(static_cast<int64_t>(std::floor(t)), cols - 1);
    frac[i] = t - static_cast<double>(lower[i]);
    needed.push_back(lower[i]);
    if (frac[i] > 0.0) needed.push_back(lower[i] + 1);
  }
  std::sort(needed.begin(), needed.end());
  needed.erase(std::unique(needed.begin(), needed.end()), needed.end());

  at::Tensor out = at::empty({rows, P}, x.options());
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  std::atomic<bool> non_finite{false};
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1));
  at::parallel_for(0, rows, grain, [&](int64_t r0, int64_t r1) {
    std::vector<float> buf(cols);
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = src + r * cols;
      bool finite = true;
      for (int64_t j = 0; j < cols; ++j) {
        buf[j] = row[j];
        finite &= std::isfinite(row[j]);
      }
      if (!finite) {
        non_finite = true;
        return;
      }
      multiselect(buf.data(), buf.data(), buf.data() + cols, needed.data(), needed.data() + needed.size());
      for (int64_t i = 0; i < P; ++i) {
        const double v0 = buf[lower[i]];
        const double v = frac[i] > 0.0 ? v0 + frac[i] * (static_cast<double>(buf[lower[i] + 1]) - v0) : v0;
        dst[r * P + i] = static_cast<float>(v);
      }
    }
  });
  if (non_finite) throw Error("row_quantile: the tensor holds non-finite values");
  return out.to(w.device());
}

at::Tensor row_quantile(const at::Tensor& w, double p) { return row_quantiles(w, {p}).squeeze(1); }

const std::vector<double>& default_percentiles() {
  static const std::vector<double> p = {0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995, 0.99999, 1.0};
  return p;
}

RowRangeSearch search_row_ranges_detailed(const at::Tensor& w, int bits, RangeError kind, const at::Tensor& hessian,
                                          const at::Tensor& target, const at::Tensor& complement,
                                          const std::vector<double>& percentiles) {
  const char* what = "search_row_ranges";
  check_bits(bits, what);
  if (percentiles.empty()) throw Error("search_row_ranges: no percentiles");
  for (double p : percentiles)
    if (!(p >= 0.5 && p <= 1.0))
      throw Error("search_row_ranges: percentiles must lie in [0.5, 1], got " + std::to_string(p));
  const at::Tensor x = as_matrix(w, what);
  const int64_t rows = x.size(0), cols = x.size(1);
  const int64_t P = static_cast<int64_t>(percentiles.size());

  at::Tensor h, W, B;
  if (kind == RangeError::Hessian) {
    h = as_matrix(hessian, what, "hessian").to(x.device());
    if (h.sizes() != x.sizes())
      throw Error("search_row_ranges: hessian " + shape_str(h) + " must match w " + shape_str(x));
  } else if (kind == RangeError::Product) {
    W = as_matrix(target, what, "target").to(x.device());
    B = as_matrix(complement, what, "complement").to(x.device());
    if (B.size(0) != cols || W.size(0) != rows || W.size(1) != B.size(1))
      throw Error("search_row_ranges: E3 needs w [m, k], complement [k, n] and target [m, n]; got w " + shape_str(x) +
                  ", complement " + shape_str(B) + ", target " + shape_str(W));
    if (hessian.defined()) {
      h = as_matrix(hessian, what, "hessian").to(x.device());
      if (h.sizes() != W.sizes())
        throw Error("search_row_ranges: hessian " + shape_str(h) + " must match target " + shape_str(W));
    }
  }
  const int64_t err_cols = kind == RangeError::Product ? W.size(1) : cols;
  if (cols == 0 || err_cols == 0) throw Error("search_row_ranges: rows are empty");

  // All quantiles in one pass: q(p) for every p, then q(1 − p).
  std::vector<double> qs(percentiles);
  for (double p : percentiles) qs.push_back(1.0 - p);
  const at::Tensor quant = row_quantiles(x, qs);
  const at::Tensor hi = quant.slice(1, 0, P), lo = quant.slice(1, P, 2 * P);
  const RowQuantParams cand = params_from_range(lo, hi, bits);  // [rows, P]
  // Candidate-major columns [P, rows, 1], so one batch is a contiguous slice.
  const at::Tensor s_all = cand.scale.t().contiguous().unsqueeze(-1);
  const at::Tensor z_all = cand.zero_point.t().contiguous().unsqueeze(-1);

  at::Tensor err = at::empty({P, rows}, x.options().dtype(at::kDouble));
  const int64_t per_candidate =
      std::max<int64_t>(1, kind == RangeError::Product ? rows * std::max(cols, err_cols) : rows * cols);
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(P, kSearchBatchElements / per_candidate));
  const at::Tensor x3 = x.unsqueeze(0);
  at::Tensor qbuf;  // reused across batches (the last batch may be smaller: views of their fronts)
  for (int64_t p0 = 0; p0 < P; p0 += batch) {
    const int64_t p1 = std::min(P, p0 + batch), n = p1 - p0;
    const at::Tensor s = s_all.slice(0, p0, p1), z = z_all.slice(0, p0, p1);
    if (!qbuf.defined()) qbuf = at::empty({n * rows * cols}, x.options());
    at::Tensor q = qbuf.narrow(0, 0, n * rows * cols).view({n, rows, cols});
    fake_quantize_into(q, x3, s, z, bits);
    at::Tensor d;  // the residual to square: [n, rows, err_cols]
    if (kind == RangeError::Product) {
      d = parallel_linear(q.view({n * rows, cols}), B.t(), {}).view({n, rows, err_cols});
      d.sub_(W);
    } else {
      d = q.sub_(x3);
    }
    d.mul_(d);
    if (h.defined()) d.mul_(h);
    err.slice(0, p0, p1).copy_(d.sum(-1).to(at::kDouble).div_(static_cast<double>(err_cols)));
  }
  err = err.t().contiguous();  // [rows, P]

  // A collapsed range on a non-constant row divides by zero in the reference (NaN, never chosen).
  const auto [mn, mx] = x.aminmax(1, true);
  const at::Tensor degenerate = at::eq(hi, lo).logical_and_(at::ne(mn, mx));
  err.masked_fill_(degenerate.logical_or(at::isnan(err)), std::numeric_limits<double>::infinity());

  // The reference loop: strictly smaller than the best so far (initially 1e10); ties keep the earlier p.
  const at::Tensor err_cpu = err.to(at::kCPU);
  at::Tensor choice = at::empty({rows}, at::TensorOptions().dtype(at::kLong));
  const double* e = err_cpu.data_ptr<double>();
  int64_t* c = choice.data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    double best = 1e10;
    int64_t arg = -1, argmin = 0;
    for (int64_t i = 0; i < P; ++i) {
      const double v = e[r * P + i];
      if (v < best) best = v, arg = i;
      if (v < e[r * P + argmin]) argmin = i;
    }
    c[r] = arg >= 0 ? arg : argmin;  // nothing under 1e10: the smallest anyway
  }
  choice = choice.to(x.device());

  RowRangeSearch result;
  result.params.bits = bits;
  result.params.scale = cand.scale.gather(1, choice.unsqueeze(1)).squeeze(1);
  result.params.zero_point = cand.zero_point.gather(1, choice.unsqueeze(1)).squeeze(1);
  result.choice = choice;
  result.error = err;
  return result;
}

RowQuantParams search_row_ranges(const at::Tensor& w, int bits, RangeError kind, const at::Tensor& hessian,
                                 const at::Tensor& target, const at::Tensor& complement,
                                 const std::vector<double>& percentiles) {
  return search_row_ranges_detailed(w, bits, kind, hessian, target, complement, percentiles).params;
}

}  // namespace lorq
