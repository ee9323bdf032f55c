#include "lorq/compress.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>

#include "lorq/error.h"

namespace lorq {

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

CompressionAnalysis analyze_model(Model& model, const ImageSet& images, const CompressSettings& s,
                                  const JobControl& job) {
  CompressionAnalysis a;
  auto t = std::chrono::steady_clock::now();
  Calibration calib = calibrate(model, images, s.calibration, job);
  a.warnings = calib.warnings;
  a.stage_seconds.emplace_back("calibration", since(t));

  t = std::chrono::steady_clock::now();
  const int64_t lfh_n = std::min<int64_t>(s.lfh_images, calib.images.size(0));
  auto H = label_free_hessian(model, calib.images.slice(0, 0, lfh_n), s.lfh, job);
  a.stage_seconds.emplace_back("sensitivity", since(t));

  t = std::chrono::steady_clock::now();
  {
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
  }
  a.stage_seconds.emplace_back("candidates", since(t));

  t = std::chrono::steady_clock::now();
  measure_global_errors(model, calib, a.layers, s.global_error, job, &H);
  a.stage_seconds.emplace_back("global error", since(t));
  return a;
}

BudgetAllocator make_allocator(const CompressionAnalysis& a) {
  std::vector<std::vector<AllocOption>> options;
  for (const auto& l : a.layers) {
    std::vector<AllocOption> o;
    for (const auto& opt : l.options) {
      if (opt.error < 0) throw Error(l.layer + ": option " + opt.label() + " has no global error yet");
      o.push_back({opt.bytes, opt.error});
    }
    options.push_back(std::move(o));
  }
  return BudgetAllocator(std::move(options));
}

Allocation allocate(const CompressionAnalysis& a, int64_t budget) {
  BudgetAllocator alloc = make_allocator(a);
  if (budget < alloc.min_bytes())
    throw Error("budget " + std::to_string(budget) + " bytes is below the smallest achievable size " +
                std::to_string(alloc.min_bytes()) + " bytes (largest useful: " + std::to_string(alloc.max_bytes()) +
                " bytes)");
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
