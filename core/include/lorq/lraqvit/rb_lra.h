#pragma once
// RB-LRA (LRA-QViT spec §2): SVD truncation of the configured block layers, each held as frozen factors V′ [m, r],
// U′ [n, r] plus trainable deltas Ṽ, Ũ (the re-parameterizable branch), and the exact merge V* = V′ + Ṽ,
// U* = U′ + Ũ into two plain matmuls y = V*(U*ᵀx) + b.
//
// Σ split [G, spec §4.4]: Σ sits on the input-side factor (V′ = P_r has orthonormal columns, U′ = Q_r Σ_r).
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "lorq/models/model.h"

namespace lorq::lraqvit {

enum class BranchInit {
  Zero,        // [G] default: Ṽ = Ũ = 0, a plain SVD start
  WrReported,  // Ṽ₀U′ᵀ = P_del Σ_del Q_rᵀ (the top r discarded output-side components with their singular values,
               // zero-padded when fewer than r were discarded), Ũ₀ = 0: the spec's literal reading of WR (§2.3)
  Random,  // small Gaussian on both deltas: 1% of the RMS of the matching base factor
};
std::string to_string(BranchInit init);
BranchInit branch_init_from_string(const std::string& s);  // zero | wr_reported | random; throws lorq::Error

struct RbLraSettings {
  // Which layers (hidden layers only): each kind names the trailing components of a layer name, "*" standing for
  // any one component ("qkv" matches "blocks.3.attn.qkv", "layer.*.output.dense" matches
  // "vit.encoder.layer.3.output.dense" but not "...layer.3.attention.output.dense"). The default is timm ViT's
  // naming; on a model without those layers, layer_kinds_for() takes the same block layers in HF naming instead
  // (YOLOS: attention.query/key/value, intermediate.dense, layer.*.output.dense; SegFormer: query, key, value,
  // dense1, dense2).
  std::vector<std::string> layer_kinds = {"qkv", "fc1", "fc2"};
  double rank_fraction = 0.5;  // r = floor(rank_fraction · min(m, n)) (spec rule (i): r = k/2)
  // When > 0, replaces rank_fraction: the factors keep this fraction of each layer's parameters,
  // r = floor(param_ratio · m·n / (m + n)), clamped to 1..min(m, n).
  double param_ratio = 0;
  BranchInit init = BranchInit::Zero;
  uint64_t seed = 0;  // the Random init
};

struct MergedFactors {
  std::string layer;
  at::Tensor a;  // V* [m, r]
  at::Tensor b;  // U*ᵀ [r, n]
};

struct RbLraLayer {
  std::string name;
  int64_t rank = 0;
  at::Tensor base_out, base_in;    // V′ [m, r], U′ [n, r]: frozen
  at::Tensor delta_out, delta_in;  // Ṽ [m, r], Ũ [n, r]: the trainable branch

  // (V′+Ṽ)((U′+Ũ)ᵀx) + b: the training form (the same gradients as the branch form, two thin matmuls).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& bias) const;
  // The trunk plus the branch as the spec writes it: V′(U′ᵀx) + [V′(Ũᵀx) + Ṽ(U′ᵀx) + Ṽ(Ũᵀx)] + b.
  at::Tensor forward_unfolded(const at::Tensor& x, const at::Tensor& bias) const;
  MergedFactors merge() const;  // detached copies
};

// Whether `kind` names the trailing components of `name` (see RbLraSettings::layer_kinds).
bool layer_kind_matches(const std::string& name, const std::string& kind);
// The kinds truncate_layers uses on `model`: settings.layer_kinds, or for the default set on a model without ViT's
// names, the first architecture default of which every kind matches a hidden layer.
std::vector<std::string> layer_kinds_for(const Model& model, const RbLraSettings& settings);
// Whether `info` is one of the layers `kinds` selects (hidden, low-rank allowed, a kind matching).
bool selected_layer(const LinearLayerInfo& info, const std::vector<std::string>& kinds);

// The rank `settings` gives an m x n layer.
int64_t rank_for(int64_t m, int64_t n, const RbLraSettings& settings);

// The layers `settings` selects, truncated from the model's current weights. Throws lorq::Error when a kind
// matches no hidden layer or the settings are out of range.
std::vector<RbLraLayer> truncate_layers(const Model& model, const RbLraSettings& settings);

// Installs each layer as the model's linear override (replacing any): the training form, or the unfolded one.
enum class BranchForm { Training, Unfolded };
void install_branches(Model& model, const std::vector<RbLraLayer>& layers, BranchForm form = BranchForm::Training);
// Installs merged factors as plain two-matmul overrides A(Bx) + b.
void install_merged(Model& model, const std::vector<MergedFactors>& merged);
void remove_overrides(Model& model, const std::vector<RbLraLayer>& layers);

// Every delta by a stable name ("<layer>.delta_out", "<layer>.delta_in"), in layer order.
std::vector<std::pair<std::string, at::Tensor>> named_deltas(const std::vector<RbLraLayer>& layers);

// Parameters of the truncated layers against the dense ones they replace.
struct RankSummary {
  int64_t dense_params = 0, factor_params = 0;
};
RankSummary rank_summary(const std::vector<RbLraLayer>& layers);

}  // namespace lorq::lraqvit
