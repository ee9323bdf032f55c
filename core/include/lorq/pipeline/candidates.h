#pragma once
// The intra-layer stage (spec §5): every compression option of one layer — quantization Q(b) and low-rank
// LR(b_A, b_B, r) — with its size and local loss Λ, reduced to the layer's Pareto front (plus every Q option).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/quant/gptq.h"
#include "lorq/quant/quantizer.h"
#include "lorq/types.h"
#include "lorq/quant/weighted_svd.h"

namespace lorq {

struct LayerOption {
  OptionKind kind = OptionKind::Quant;
  int bits = 0;                // Q(b): weight bits
  int bits_a = 0, bits_b = 0;  // LR: factor bits
  int64_t rank = 0;            // LR: rank r
  int64_t size_bits = 0;       // weight storage in bits (spec §2.4; LR uses the correct r·(m·b_A + n·b_B))
  int64_t bytes = 0;           // floor(size_bits / 8), what the budget counts
  double local_loss = 0;       // Λ (spec §5.3)
  double error = -1;           // global error (spec §6), -1 until measured or interpolated
  bool measured = false;       // error measured directly (anchor) rather than interpolated
  std::string label() const;   // "Q4", "LR r=37 A6/B4"
};

struct CandidateSettings {
  std::vector<int> bits{2, 3, 4, 6, 8};
  std::vector<int> factor_bits{4, 6, 8};
  bool hessian_weighted = true;  // LFH-weighted ranges, SVD and Λ (the spec's HMSE); false: plain MSE
  bool weighted_svd = true;      // false: plain SVD (D = I)
  bool swapped_lr_size = false;  // the reference's swapped r·(n·b_A + m·b_B) in the filter and Pareto (parity)
  // How the codes are rounded on each row's grid: error compensation (GPTQ) needs the layer's input moment XᵀX;
  // without one a layer is rounded to nearest whatever this says.
  Quantizer quantizer = Quantizer::Nearest;
  GptqSettings gptq;
  // Images whose layer inputs make the moments XᵀX: the calibration images, then more of the set (in its order, as
  // the final stages take theirs) up to this count. 32 images give DeiT-Tiny's fc2 (768 inputs) about 8 token rows
  // per input, few enough that the compensation fits those images' noise. Only the fit uses the extra images: the
  // global errors stay measured on the calibration images, each fold's compensation still judged on the other fold.
  int gptq_images = 0;
  // Non-empty: gptq.damping is chosen among these by two-fold cross-validation on the calibration images
  // (pipeline/damping_choice.h) before the candidates are built; empty: gptq.damping as it is.
  std::vector<double> gptq_damping_choices;
};

struct LayerCandidates {
  std::string layer;
  int64_t out_features = 0, in_features = 0;
  bool low_rank_allowed = true;
  std::vector<LayerOption> options;             // the Pareto front plus every Q(b), in the spec's order
  std::map<int, RowQuantParams> weight_params;  // Q(b): per-row ranges of W, by bits
  LowRankFactors factors;                       // A [m, k], B [k, n] (empty when low rank is not allowed)
  std::map<int, RowQuantParams> a_params;       // per-row ranges of the full A, by bits (reused for every r, §5.2)
  std::map<int, RowQuantParams> b_params;       // per-row ranges of the full B, by bits
  int64_t candidates_considered = 0;            // before Pareto filtering
  bool errors_measured = false;  // global errors measured on the network (false: LFH estimates, or none yet)
  // Error-compensated rounding (quant/gptq.h): the values the codes round from, so that nearest rounding of them
  // on the same grids gives the compensated codes. Empty maps: nearest rounding of W and of the factors.
  std::map<int, at::Tensor> weight_values;             // Q(b): [m, n], by bits
  std::map<int, at::Tensor> b_values;                  // B̃ (first factor, input x): [k, n], by b_B
  std::map<std::pair<int, int>, at::Tensor> a_values;  // Ã (second factor, input B̃x): [m, k], by (b_A, b_B)
};

// Builds every option of one layer. W [m, n]; H its LFH (or undefined for H ≡ 1). input_moment: XᵀX [n, n] of the
// layer's calibration inputs; with settings.quantizer == Gptq every option's codes are error-compensated through it
// (Q(b) on W; LR: B̃ on x, then Ã on B̃x in rank order, so a rank-r prefix of Ã does not depend on r), each tensor
// kept only where it lowers the output error on those inputs (compensated_values). Λ is that of the options' codes.
LayerCandidates build_layer_candidates(const std::string& layer, const at::Tensor& W, const at::Tensor& H,
                                       bool low_rank_allowed, const CandidateSettings& settings = {},
                                       const at::Tensor& input_moment = {});

// The values an option's tensors round from: the compensated ones when the layer has them, else W / A / B.
at::Tensor weight_source(const LayerCandidates& c, int bits, const at::Tensor& W);
at::Tensor factor_a_source(const LayerCandidates& c, int bits_a, int bits_b);
at::Tensor factor_b_source(const LayerCandidates& c, int bits_b);

// The compressed weight W̃ of an option: fake-quantized Q(W), or Ã_r·B̃_r (W is then unused).
at::Tensor compressed_weight(const LayerCandidates& c, const LayerOption& option, const at::Tensor& W);

// Λ of every rank 1..k of one factor-bit pair in one pass (spec §5.5), from the quantized full factors:
// Λ(r) = (1/(m·n)) Σ_c h̄_c ‖W_c − Ã_{c,≤r} B̃_{≤r}‖². Returned as a [k] float64 tensor. Exposed for tests.
at::Tensor low_rank_local_losses(const at::Tensor& W, const at::Tensor& A_q, const at::Tensor& B_q,
                                 const at::Tensor& row_weight);

// Indices of the non-dominated points (smaller is better on both axes); of exactly tied points the first is kept.
std::vector<size_t> pareto_front(const std::vector<std::pair<double, double>>& points);

}  // namespace lorq
