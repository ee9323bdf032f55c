#pragma once
// WADS, weight-aware distribution scaling (LRA-QViT spec §4.2): a learned per-channel scale s > 0 of a linear
// input X, folded exactly into the producer (÷s) and the consumer (×s), so that X̂ = X·diag(s)⁻¹ and Ŵ = W·diag(s)
// give X̂Ŵᵀ = XWᵀ. Chosen per point to minimise the weight-aware relative output error
//   E(s) = ‖Q_tok(X̂)·Q_ch(Ŵ)ᵀ − XWᵀ‖²_F / ‖XWᵀ‖²_F
// (per-token activations, per-channel weights: token_quant.h), from the closed-form start
// s_j = sqrt(max|X_:,j| / max|W_:,j|) (SmoothQuant, α = 0.5), by Adam on log s with straight-through rounding.
//
// Where a scale folds exactly (ViT), and what it does at each point:
//   LayerNorm output (qkv and fc1 input): s⁻¹ into the LayerNorm's γ and β; s into the consumer's input columns
//       (the B factor's columns when the consumer is factorized);
//   proj input: s⁻¹ into the value rows of qkv (rows 2C..3C of its output side: A's rows and the bias); s into
//       proj's input columns (attention is linear in V); HF naming (YOLOS, SegFormer): all rows of the separate
//       value layer, and attention.output.dense's columns;
//   (YOLOS and SegFormer feed q, k and v from one LayerNorm through three layers: that LayerNorm has no single
//   consumer and is not scaled; their second LayerNorm, read by the MLP's first layer, is);
//   factor bottleneck z = Bx of every factorized layer: s⁻¹ into B's rows, s into A's columns;
//   fc2 input (after GELU): NOT foldable; left unscaled (no runtime multiply is added).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/lraqvit/rb_lra.h"
#include "lorq/lraqvit/token_quant.h"
#include "lorq/models/model.h"

namespace lorq::lraqvit {

// The merged model: a Model for everything dense, plus the factorized layers' merged factors by layer name.
using FactorMap = std::map<std::string, MergedFactors>;

enum class WadsPointKind { LayerNorm, ValueToProj, Bottleneck };

struct WadsPoint {
  std::string name;  // "blocks.3.norm1", "blocks.3.attn.proj.in", "blocks.3.mlp.fc1.bottleneck"
  WadsPointKind kind = WadsPointKind::Bottleneck;
  std::string producer;  // the LayerNorm, qkv, or the factorized layer itself
  std::string consumer;  // the linear layer reading the scaled tensor
};

// The foldable points of `model` given the factorized layers (ViT: every block's norm1, norm2, proj input, and each
// factorized layer's bottleneck), in network order.
std::vector<WadsPoint> wads_points(const Model& model, const FactorMap& factors);

// Folds s (one value per channel of the point's tensor, > 0) into the producer (÷) and the consumer (×).
// Throws lorq::Error on a wrong length or a non-positive scale.
void fold_scale(Model& model, FactorMap& factors, const WadsPoint& point, const at::Tensor& s);

// The point's consumer weight as the scaled tensor sees it: [out, channels] (B for a factorized consumer's input,
// A for a bottleneck, the dense weight otherwise).
at::Tensor consumer_weight(const Model& model, const FactorMap& factors, const WadsPoint& point);

struct WadsSettings {
  int steps = 100;      // Adam steps per point [G; spec 200-500 on a GPU]; 0: closed-form start only
  double lr = 5e-3;     // on log s (spec)
  int images = 32;      // calibration images whose tokens form X [G; spec 256-1024]
  int max_rows = 2048;  // token rows per point, a seeded random subset when there are more [G: CPU time]
  uint64_t seed = 0;
  int weight_bits = 8;
  TokenQuantizer activations;  // 8-bit symmetric per-token by default
};

struct WadsPointResult {
  WadsPoint point;
  double identity_error = 0;  // E(1): no scaling
  double initial_error = 0;   // E at the closed-form start
  double final_error = 0;     // E of the scale folded (the best seen, the identity included)
};

// E(s) for tokens X [R, n] and weight W [m, n] (no autograd).
double wads_error(const at::Tensor& X, const at::Tensor& W, const at::Tensor& s, const WadsSettings& settings);

// Learns and folds one scale per point, in network order, from the float activations of the merged model (factors
// installed as two matmuls) on the first settings.images of `images`. Returns one result per point. Progress:
// stage "wads", done/total in points.
std::vector<WadsPointResult> apply_wads(Model& model, FactorMap& factors, const at::Tensor& images,
                                        const WadsSettings& settings, const JobControl& job = {});

}  // namespace lorq::lraqvit
