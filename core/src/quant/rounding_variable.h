#pragma once
// The per-tensor pieces of learned rounding shared by one layer's training (rounding_layer.cpp) and a segment's
// joint training (rounding_segment.cpp). Internal to core/src/quant.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <string>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/quant/adaptive_rounding.h"

namespace lorq {
namespace rounding {

// The constant parts of one quantized tensor's soft quantizer, computed once per layer.
struct RoundingVariable {
  at::Tensor floor_codes;        // ⌊V/(Δ+ε)⌋ as float
  at::Tensor scale, zero;        // [rows, 1]
  at::Tensor base, scaled_zero;  // ⌊V/(Δ+ε)⌋ + z and Δ·z: two fewer ops per step
  double qmax = 255;
  at::Tensor alpha;  // the learned variable, requires_grad

  explicit RoundingVariable(const QuantizedTensor& q) {
    c10::NoGradGuard no_grad;
    scale = q.params.scale.to(at::kFloat).reshape({-1, 1});
    zero = q.params.zero_point.to(at::kFloat).reshape({-1, 1});
    floor_codes = at::floor(q.values / (scale + kEpsilon));
    base = floor_codes + zero;
    scaled_zero = scale * zero;
    qmax = std::pow(2.0, q.params.bits) - 1;
    alpha = initial_alpha(q).requires_grad_(true);
  }
  // Δ·(clipSTE(⌊V/(Δ+ε)⌋ + h + z) − z) for a given h = h(α).
  at::Tensor soft(const at::Tensor& h) const {
    const at::Tensor x = base + h;
    // Straight-through clip: forward clipped, gradient passed unchanged even where clipped (spec §10.1).
    const at::Tensor clipped = x + (at::clamp(x, 0, qmax) - x).detach();
    return scale * clipped - scaled_zero;
  }
};

inline void check_tensor(const QuantizedTensor& q, const std::string& what) {
  if (!q.values.defined() || q.values.dim() != 2 || !q.codes.defined() || q.codes.sizes() != q.values.sizes() ||
      q.params.scale.numel() != q.values.size(0) || q.params.zero_point.numel() != q.values.size(0))
    throw Error(what + ": inconsistent quantized tensor (values, codes and per-row parameters must match)");
}

inline at::Tensor codes_from(const at::Tensor& floor_codes, const at::Tensor& up, const at::Tensor& zero, double qmax) {
  return at::clamp(floor_codes + up + zero, 0, qmax).to(at::kByte);
}

// The layer's quantized tensors, checked: W, or the factors A and B of a low-rank layer.
inline std::vector<QuantizedTensor*> tensors_of(CompressedLayer& l) {
  if (l.form == LayerForm::Float) throw Error(l.layer + ": a float layer has no rounding to learn");
  if (l.form == LayerForm::LowRank) {
    check_tensor(l.a, l.layer + " (A)");
    check_tensor(l.b, l.layer + " (B)");
    return {&l.a, &l.b};
  }
  check_tensor(l.weight, l.layer);
  return {&l.weight};
}

// The hard rounding of learned variables put into their tensors; the codes they replace are kept for a step back.
struct HardRounding {
  std::vector<at::Tensor> before;  // per tensor
  int64_t flipped = 0, total = 0;  // codes changed, codes in all
  double flipped_fraction() const { return total ? double(flipped) / double(total) : 0.0; }
  void restore(const std::vector<QuantizedTensor*>& tensors) const {
    for (size_t i = 0; i < tensors.size(); ++i) tensors[i]->codes = before[i];
  }
};

inline HardRounding take_hard_codes(const std::vector<QuantizedTensor*>& tensors,
                                    const std::vector<RoundingVariable>& vars) {
  c10::NoGradGuard no_grad;
  HardRounding h;
  for (size_t i = 0; i < tensors.size(); ++i) {
    h.before.push_back(tensors[i]->codes);
    const at::Tensor up = (vars[i].alpha.detach() >= 0).to(at::kFloat);
    tensors[i]->codes = codes_from(vars[i].floor_codes, up, vars[i].zero, vars[i].qmax);
    h.flipped += tensors[i]->codes.ne(h.before[i]).sum().item<int64_t>();
    h.total += h.before[i].numel();
  }
  return h;
}

}  // namespace rounding
}  // namespace lorq
