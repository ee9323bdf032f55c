#include "lorq/lraqvit/rb_lra.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "lorq/common/error.h"

namespace lorq::lraqvit {

std::string to_string(BranchInit init) {
  switch (init) {
    case BranchInit::Zero:
      return "zero";
    case BranchInit::WrReported:
      return "wr_reported";
    case BranchInit::Random:
      return "random";
  }
  return "?";
}

BranchInit branch_init_from_string(const std::string& s) {
  if (s == "zero") return BranchInit::Zero;
  if (s == "wr_reported") return BranchInit::WrReported;
  if (s == "random") return BranchInit::Random;
  throw Error("RB-LRA: unknown branch init '" + s + "' (expected zero, wr_reported or random)");
}

at::Tensor RbLraLayer::forward(const at::Tensor& x, const at::Tensor& bias) const {
  const at::Tensor z = at::matmul(x, base_in + delta_in);
  return bias.defined() ? at::linear(z, base_out + delta_out, bias) : at::matmul(z, (base_out + delta_out).t());
}

at::Tensor RbLraLayer::forward_unfolded(const at::Tensor& x, const at::Tensor& bias) const {
  const at::Tensor zb = at::matmul(x, base_in), zd = at::matmul(x, delta_in);
  const at::Tensor trunk = at::matmul(zb, base_out.t());
  const at::Tensor branch =
      at::matmul(zd, base_out.t()) + at::matmul(zb, delta_out.t()) + at::matmul(zd, delta_out.t());
  at::Tensor y = trunk + branch;
  return bias.defined() ? y + bias : y;
}

MergedFactors RbLraLayer::merge() const {
  c10::NoGradGuard no_grad;
  return {name, (base_out + delta_out).contiguous(), (base_in + delta_in).t().contiguous()};
}

int64_t rank_for(int64_t m, int64_t n, const RbLraSettings& s) {
  const int64_t k = std::min(m, n);
  const double r = s.param_ratio > 0 ? std::floor(s.param_ratio * double(m) * double(n) / double(m + n))
                                     : std::floor(s.rank_fraction * double(k));
  return std::clamp<int64_t>(static_cast<int64_t>(r), 1, k);
}

namespace {

RbLraLayer truncate(const std::string& name, const at::Tensor& w, const RbLraSettings& s, at::Generator& gen) {
  const int64_t m = w.size(0), n = w.size(1), k = std::min(m, n);
  const int64_t r = rank_for(m, n, s);
  // float64 SVD: the factors are the reference every later stage is measured against.
  const auto [P, S, Qh] = at::linalg_svd(w.to(at::kDouble), /*full_matrices=*/false);
  RbLraLayer l;
  l.name = name;
  l.rank = r;
  l.base_out = P.slice(1, 0, r).to(at::kFloat).contiguous();
  l.base_in = (Qh.slice(0, 0, r).t() * S.slice(0, 0, r)).to(at::kFloat).contiguous();
  l.delta_out = at::zeros({m, r});
  l.delta_in = at::zeros({n, r});
  if (s.init == BranchInit::WrReported) {
    // Ṽ₀ = P_del Σ_del Σ_r⁻¹, so that Ṽ₀U′ᵀ = P_del Σ_del Q_rᵀ whatever the Σ split (spec §2.3's starting weight).
    const int64_t d = std::min(r, k - r);
    if (d > 0) {
      const at::Tensor seeded = P.slice(1, r, r + d) * (S.slice(0, r, r + d) / S.slice(0, 0, d).clamp_min(1e-30));
      l.delta_out.slice(1, 0, d).copy_(seeded.to(at::kFloat));
    }
  } else if (s.init == BranchInit::Random) {
    const double so = 0.01 * l.base_out.pow(2).mean().sqrt().item<double>();
    const double si = 0.01 * l.base_in.pow(2).mean().sqrt().item<double>();
    l.delta_out = at::randn({m, r}, gen) * so;
    l.delta_in = at::randn({n, r}, gen) * si;
  }
  return l;
}

}  // namespace

namespace {
std::vector<std::string> components(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t dot = s.find('.'); dot != std::string::npos; dot = s.find('.', start = dot + 1))
    out.push_back(s.substr(start, dot - start));
  out.push_back(s.substr(start));
  return out;
}

bool any_hidden_layer_matches(const Model& model, const std::string& kind) {
  for (const auto& info : model.linear_layers())
    if (selected_layer(info, {kind})) return true;
  return false;
}
}  // namespace

bool layer_kind_matches(const std::string& name, const std::string& kind) {
  const std::vector<std::string> n = components(name), k = components(kind);
  if (kind.empty() || k.size() > n.size()) return false;
  for (size_t i = 0; i < k.size(); ++i)
    if (k[k.size() - 1 - i] != "*" && k[k.size() - 1 - i] != n[n.size() - 1 - i]) return false;
  return true;
}

bool selected_layer(const LinearLayerInfo& info, const std::vector<std::string>& kinds) {
  if (info.role != LayerRole::Hidden || !info.low_rank_allowed) return false;
  for (const auto& k : kinds)
    if (layer_kind_matches(info.name, k)) return true;
  return false;
}

std::vector<std::string> layer_kinds_for(const Model& model, const RbLraSettings& s) {
  static const std::vector<std::vector<std::string>> defaults = {
      {"qkv", "fc1", "fc2"},  // timm ViT
      {"attention.query", "attention.key", "attention.value", "intermediate.dense", "layer.*.output.dense"},  // YOLOS
      {"query", "key", "value", "dense1", "dense2"},  // SegFormer
  };
  if (s.layer_kinds != defaults.front()) return s.layer_kinds;
  for (const auto& set : defaults) {
    bool all = true;
    for (const auto& k : set) all = all && any_hidden_layer_matches(model, k);
    if (all) return set;
  }
  return s.layer_kinds;  // truncate_layers names the first kind that matches nothing
}

std::vector<RbLraLayer> truncate_layers(const Model& model, const RbLraSettings& settings) {
  RbLraSettings s = settings;
  s.layer_kinds = layer_kinds_for(model, settings);
  if (s.layer_kinds.empty()) throw Error("RB-LRA: no layer kinds selected");
  if (s.param_ratio < 0 || s.param_ratio >= 1)
    throw Error("RB-LRA: param_ratio must be in (0, 1) (0: use rank_fraction), got " + std::to_string(s.param_ratio));
  if (s.param_ratio == 0 && !(s.rank_fraction > 0 && s.rank_fraction <= 1))
    throw Error("RB-LRA: rank_fraction must be in (0, 1], got " + std::to_string(s.rank_fraction));
  c10::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  for (const auto& k : s.layer_kinds)
    if (!any_hidden_layer_matches(model, k))
      throw Error("RB-LRA: no hidden layer of " + model.architecture() + " is named '*." + k + "'");
  std::vector<RbLraLayer> out;
  for (const auto& info : model.linear_layers())
    if (selected_layer(info, s.layer_kinds))
      out.push_back(truncate(info.name, model.weight(info.name).detach(), s, gen));
  return out;
}

void install_branches(Model& model, const std::vector<RbLraLayer>& layers, BranchForm form) {
  for (const RbLraLayer& l : layers) {
    if (form == BranchForm::Training)
      model.set_linear_override(
          l.name, [l](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) { return l.forward(x, b); });
    else
      model.set_linear_override(l.name, [l](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
        return l.forward_unfolded(x, b);
      });
  }
}

void install_merged(Model& model, const std::vector<MergedFactors>& merged) {
  for (const MergedFactors& f : merged) {
    const at::Tensor a = f.a, b = f.b;
    model.set_linear_override(f.layer, [a, b](const at::Tensor& x, const at::Tensor&, const at::Tensor& bias) {
      return at::linear(at::linear(x, b), a, bias);
    });
  }
}

void remove_overrides(Model& model, const std::vector<RbLraLayer>& layers) {
  for (const auto& l : layers) model.clear_linear_override(l.name);
}

std::vector<std::pair<std::string, at::Tensor>> named_deltas(const std::vector<RbLraLayer>& layers) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& l : layers) {
    out.emplace_back(l.name + ".delta_out", l.delta_out);
    out.emplace_back(l.name + ".delta_in", l.delta_in);
  }
  return out;
}

RankSummary rank_summary(const std::vector<RbLraLayer>& layers) {
  RankSummary s;
  for (const auto& l : layers) {
    s.dense_params += l.base_out.size(0) * l.base_in.size(0);
    s.factor_params += l.rank * (l.base_out.size(0) + l.base_in.size(0));
  }
  return s;
}

}  // namespace lorq::lraqvit
