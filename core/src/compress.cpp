#include "lorq/compress.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>

#include "lorq/error.h"
#include "lorq/session_cache.h"

namespace lorq {

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

CompressionAnalysis analyze_model(Model& model, const ImageSet& images, const CompressSettings& s,
                                  const JobControl& job, const SessionCache* cache) {
  std::vector<std::string> warnings;
  CompressionAnalysis a;
  if (cache && cache->load_analysis(true, &a, &warnings)) {
    a.warnings = warnings;
    a.warnings.push_back("loaded the complete analysis from the session cache " + cache->dir());
    return a;
  }
  auto t = std::chrono::steady_clock::now();
  Calibration calib = calibrate(model, images, s.calibration, job);
  warnings.insert(warnings.end(), calib.warnings.begin(), calib.warnings.end());
  std::vector<std::pair<std::string, double>> stages{{"calibration", since(t)}};

  std::map<std::string, at::Tensor> H;
  t = std::chrono::steady_clock::now();
  if (!cache || !cache->load_lfh(&H, &warnings)) {
    const int64_t n = std::min<int64_t>(s.lfh_images, calib.images.size(0));
    H = label_free_hessian(model, calib.images.slice(0, 0, n), s.lfh, job);
    if (cache) cache->save_lfh(H);
  }
  stages.emplace_back("sensitivity", since(t));

  t = std::chrono::steady_clock::now();
  if (!cache || !cache->load_analysis(false, &a, &warnings)) {
    a = CompressionAnalysis();
    c10::NoGradGuard no_grad;
    const auto& layers = model.linear_layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      job.check();
      const LinearLayerInfo& l = layers[i];
      a.layers.push_back(
          build_layer_candidates(l.name, model.weight(l.name), H.at(l.name), l.low_rank_allowed, s.candidates));
      a.compressible_params += l.params();
      job.report({"candidates", int64_t(i + 1), int64_t(layers.size()), since(t), l.name});
    }
    if (cache) cache->save_analysis(a, false);
  }
  stages.emplace_back("candidates", since(t));

  t = std::chrono::steady_clock::now();
  measure_global_errors(model, calib, a.layers, s.global_error, job, &H);
  stages.emplace_back("global error", since(t));
  a.calibration_files = calib.files;
  a.stage_seconds = stages;
  a.warnings = warnings;
  if (cache) cache->save_analysis(a, true);
  return a;
}

namespace {
bool allowed(const LayerOption& o, const LayerConstraint& c) {
  if (c.excluded) return o.kind == OptionKind::Quant && o.bits == 8;
  if (o.kind == OptionKind::Quant) return o.bits >= c.min_bits;
  if (c.max_rank >= 0 && o.rank > c.max_rank) return false;
  return o.bits_a >= c.min_bits && o.bits_b >= c.min_bits;
}
}  // namespace

BudgetAllocator make_allocator(const CompressionAnalysis& a, const Constraints& constraints) {
  std::vector<std::vector<AllocOption>> options;
  AllocConstraints ac;
  for (const auto& [name, c] : constraints)
    if (std::none_of(a.layers.begin(), a.layers.end(), [&](const LayerCandidates& l) { return l.layer == name; }))
      throw Error("constraint on unknown layer '" + name + "'");
  for (const auto& l : a.layers) {
    std::vector<AllocOption> o;
    for (const auto& opt : l.options) {
      if (opt.error < 0) throw Error(l.layer + ": option " + opt.label() + " has no global error yet");
      o.push_back({opt.bytes, opt.error});
    }
    options.push_back(std::move(o));
    auto it = constraints.find(l.layer);
    const LayerConstraint c = it == constraints.end() ? LayerConstraint() : it->second;
    if (c.pinned_option >= static_cast<int>(l.options.size()))
      throw Error(l.layer + ": pinned option " + std::to_string(c.pinned_option) + " does not exist");
    ac.pinned.push_back(c.pinned_option);
    std::vector<char> mask(l.options.size());
    bool any = false;
    for (size_t i = 0; i < l.options.size(); ++i) any |= (mask[i] = allowed(l.options[i], c));
    if (!any) throw Error(l.layer + ": no option satisfies the layer's constraints");
    ac.allowed.push_back(std::move(mask));
  }
  return BudgetAllocator(std::move(options), std::move(ac));
}

Allocation allocate(const CompressionAnalysis& a, int64_t budget, const Constraints& constraints) {
  BudgetAllocator alloc = make_allocator(a, constraints);
  int64_t largest = 0;
  for (const auto& l : a.layers) {
    int64_t m = 0;
    for (const auto& o : l.options) m = std::max(m, o.bytes);
    largest += m;
  }
  const std::string limits = " (smallest achievable " + std::to_string(alloc.min_bytes()) + " bytes, largest " +
                             std::to_string(largest) + " bytes)";
  if (budget < alloc.min_bytes())
    throw Error("budget " + std::to_string(budget) + " bytes is below the smallest achievable size" + limits);
  if (budget > largest)
    throw Error("budget " + std::to_string(budget) + " bytes is above the largest achievable size" + limits);
  AllocResult r = alloc.solve(budget);
  return {budget, r.choice, r.bytes, r.error};
}

Allocation uniform_allocation(const CompressionAnalysis& a, int bits) {
  Allocation out;
  for (const auto& l : a.layers) {
    int pick = -1;
    for (size_t i = 0; i < l.options.size(); ++i)
      if (l.options[i].kind == OptionKind::Quant && l.options[i].bits == bits) pick = static_cast<int>(i);
    if (pick < 0) throw Error(l.layer + ": no Q" + std::to_string(bits) + " option");
    out.choice.push_back(pick);
    out.bytes += l.options[pick].bytes;
    out.predicted_error += std::max(0.0, l.options[pick].error);
  }
  out.budget_bytes = out.bytes;
  return out;
}

void apply_allocation(Model& model, const CompressionAnalysis& a, const Allocation& alloc) {
  c10::NoGradGuard no_grad;
  if (alloc.choice.size() != a.layers.size()) throw Error("apply_allocation: one choice per layer is needed");
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerCandidates& l = a.layers[i];
    const LayerOption& o = l.options.at(alloc.choice[i]);
    model.set_weight(l.layer, compressed_weight(l, o, model.weight(l.layer)));
  }
}

}  // namespace lorq
