#include "lorq/pipeline/compress.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "lorq/common/error.h"
#include "lorq/pipeline/compensated_estimate.h"
#include "lorq/pipeline/cross_fit.h"
#include "lorq/pipeline/damping_choice.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/progressive_errors.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/quant/compressed_layer.h"

namespace lorq {

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

CompressionAnalysis analyze_model(Model& model, const ImageSet& images, const CompressSettings& s,
                                  const JobControl& job, const SessionCache* cache,
                                  const AnalysisRevisionFn& on_revision) {
  std::vector<std::string> warnings;
  CompressionAnalysis a;
  if (cache && cache->load_analysis(true, &a, &warnings) && cache->load_lfh(&a.lfh, &warnings)) {
    // Not a warning, and not the stage times of the run that filled the cache: say where it came from.
    a.warnings = warnings;
    a.stage_seconds.clear();
    a.cached_stages = {"calibration", "sensitivity", "candidates", "global error"};
    a.cache_dir = cache->dir();
    return a;
  }
  auto t = std::chrono::steady_clock::now();
  Calibration calib = calibrate(model, images, s.calibration, job);
  warnings.insert(warnings.end(), calib.warnings.begin(), calib.warnings.end());
  std::vector<std::pair<std::string, double>> stages{{"calibration", since(t)}};

  std::map<std::string, at::Tensor> H;
  t = std::chrono::steady_clock::now();
  std::vector<std::string> cached;
  if (!cache || !cache->load_lfh(&H, &warnings)) {
    const int64_t n = std::min<int64_t>(s.lfh_images, calib.images.size(0));
    H = label_free_hessian(model, calib.images.slice(0, 0, n), s.lfh, job);
    if (cache) cache->save_lfh(H);
  } else {
    cached.push_back("sensitivity");
  }
  stages.emplace_back("sensitivity", since(t));

  t = std::chrono::steady_clock::now();
  const bool gptq = s.candidates.quantizer == Quantizer::Gptq;
  // Moments of more images than the calibration ones (CandidateSettings::gptq_images), shared by the candidates'
  // fit and both folds of the cross-fitted global errors.
  std::map<std::string, InputMoment> more_moments;
  std::vector<std::string> moment_files;
  if (gptq && s.candidates.gptq_images > static_cast<int>(calib.files.size())) {
    ImageSet more = split_final_images(images, calib.files, static_cast<size_t>(s.candidates.gptq_images)).train;
    more.items.erase(more.items.begin(), more.items.begin() + static_cast<std::ptrdiff_t>(calib.files.size()));
    c10::NoGradGuard no_grad;
    more_moments = image_set_moments(model, more, s.calibration.batch, &moment_files, &warnings, job);
  }
  // The damping, cross-validated on the calibration images' halves when asked (pipeline/damping_choice.h). Their
  // moments then also make the whole set's, which the candidates compensate through.
  CandidateSettings cs = s.candidates;
  std::map<std::string, InputMoment> halves[2];
  std::vector<std::pair<double, double>> damping_scores;
  const int64_t N = calib.images.size(0);
  if (gptq && !cs.gptq_damping_choices.empty() && N >= 2) {
    c10::NoGradGuard no_grad;
    const int64_t half = (N + 1) / 2;  // cross_fit_candidates' folds
    halves[0] = layer_input_moments(model, calib.images.slice(0, 0, half), s.calibration.batch, job);
    halves[1] = layer_input_moments(model, calib.images.slice(0, half, N), s.calibration.batch, job);
    const DampingChoice d = choose_gptq_damping(model, halves, more_moments.empty() ? nullptr : &more_moments, H,
                                                cs.gptq_damping_choices, cs.gptq, 3, job);
    cs.gptq.damping = d.damping;
    damping_scores = d.scores;
    if (d.layers == 0) {
      char used[32];
      std::snprintf(used, sizeof used, "%g", d.damping);
      warnings.push_back("gptq damping: the calibration images' halves hold too few input rows to cross-validate it; " +
                         std::string(used) + " used");
    }
    stages.emplace_back("damping", since(t));
    t = std::chrono::steady_clock::now();
  }
  if (!cache || !cache->load_analysis(false, &a, &warnings)) {
    a = CompressionAnalysis();
    c10::NoGradGuard no_grad;
    // Error-compensating quantization needs every layer's input moment XᵀX on the calibration images.
    std::map<std::string, InputMoment> moments;
    if (gptq && !halves[0].empty()) {
      moments = halves[0];  // copied: the halves go on to the cross-fit
      add_moments(moments, halves[1]);
      add_moments(moments, more_moments);
    } else if (gptq) {
      moments = layer_input_moments(model, calib.images, s.calibration.batch, job);
      add_moments(moments, more_moments);
    }
    const auto& layers = model.linear_layers();
    for (size_t i = 0; i < layers.size(); ++i) {
      job.check();
      const LinearLayerInfo& l = layers[i];
      a.layers.push_back(build_layer_candidates(l.name, model.weight(l.name), H.at(l.name), l.low_rank_allowed, cs,
                                                compensation_moment(moments, l.name)));
      a.compressible_params += l.params();
      job.report({"candidates", int64_t(i + 1), int64_t(layers.size()), since(t), l.name});
    }
    if (cache) cache->save_analysis(a, false);
  } else {
    cached.push_back("candidates");
  }
  stages.emplace_back("candidates", since(t));

  a.calibration_files = calib.files;
  a.moment_files = moment_files;
  a.gptq_damping = gptq ? cs.gptq.damping : 0.0;
  // The halves' moments, when the damping choice took them, are the cross-fit's folds too: not taken again.
  std::map<std::string, InputMoment>* folds = halves[0].empty() ? nullptr : halves;
  a.gptq_damping_scores = damping_scores;
  a.warnings = warnings;
  a.cached_stages = cached;
  if (cache) a.cache_dir = cache->dir();
  if (on_revision && !s.global_error.estimate) {
    // Every revision is a whole analysis: the LFH and the stage times so far travel with it.
    a.lfh = H;
    a.stage_seconds = stages;
    if (gptq)  // compensated options: estimated with the compensation's out-of-fold gain, then measured cross-fitted
      estimate_then_measure_cross_fitted_global_errors(model, calib, a, cs.gptq, s.global_error, H,
                                                       more_moments.empty() ? nullptr : &more_moments, job, on_revision,
                                                       folds);
    else
      estimate_then_measure_global_errors(model, calib, a, s.global_error, H, job, on_revision);
  } else if (gptq && s.global_error.estimate) {
    // Estimated as a gptq analysis' first revision is: the plain LFH estimate would overrate every compensated option.
    a.stage_seconds = stages;
    estimate_cross_fitted_global_errors(model, calib, a, cs.gptq, s.global_error, H,
                                        more_moments.empty() ? nullptr : &more_moments, job, folds);
    a.lfh = std::move(H);
  } else {
    t = std::chrono::steady_clock::now();
    if (gptq)  // compensated options: measured on images they were not fitted to
      measure_cross_fitted_global_errors(model, calib, a.layers, cs.gptq, s.global_error, job, &H,
                                         more_moments.empty() ? nullptr : &more_moments, folds);
    else
      measure_global_errors(model, calib, a.layers, s.global_error, job, &H);
    stages.emplace_back("global error", since(t));
    a.lfh = std::move(H);
    a.stage_seconds = stages;
  }
  if (cache) cache->save_analysis(a, true);
  return a;
}

int CompressionAnalysis::layers_measured() const {
  return static_cast<int>(
      std::count_if(layers.begin(), layers.end(), [](const LayerCandidates& l) { return l.errors_measured; }));
}

namespace {

bool allowed(const LayerOption& o, const LayerConstraint& c) {
  if (c.excluded == Exclusion::Q8) return o.kind == OptionKind::Quant && o.bits == 8;
  if (c.excluded == Exclusion::Float) return false;
  if (o.kind == OptionKind::Quant) return o.bits >= c.min_bits;
  if (c.max_rank >= 0 && o.rank > c.max_rank) return false;
  return o.bits_a >= c.min_bits && o.bits_b >= c.min_bits;
}

const char* kFloatLabel = "F32";

// Per layer, the choices its constraint allows, as (label, analysis option index or kKeepFloat).
std::vector<std::pair<std::string, int>> allowed_choices(const LayerCandidates& l, const LayerConstraint& c) {
  std::vector<std::pair<std::string, int>> out;
  if (c.excluded == Exclusion::Float) {
    if (c.pinned_option >= 0) throw Error(l.layer + ": a layer kept in float cannot be pinned to an option");
    return {{kFloatLabel, kKeepFloat}};
  }
  if (c.pinned_option >= 0) {
    if (c.pinned_option >= static_cast<int>(l.options.size()))
      throw Error(l.layer + ": pinned option " + std::to_string(c.pinned_option) + " does not exist");
    if (c.excluded == Exclusion::Q8 && !allowed(l.options[c.pinned_option], c))
      throw Error(l.layer + ": a layer kept at Q8 cannot be pinned to " + l.options[c.pinned_option].label());
    return {{l.options[c.pinned_option].label(), c.pinned_option}};
  }
  for (size_t i = 0; i < l.options.size(); ++i)
    if (allowed(l.options[i], c)) out.emplace_back(l.options[i].label(), static_cast<int>(i));
  if (out.empty()) throw Error(l.layer + ": no option satisfies the layer's constraints");
  return out;
}

// Merges groups that share a layer (union-find over layer indices); returns the groups with >= 2 layers.
std::vector<std::vector<int>> merged_groups(const CompressionAnalysis& a, const Constraints& k) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < a.layers.size(); ++i) index[a.layers[i].layer] = static_cast<int>(i);
  std::vector<int> parent(a.layers.size());
  for (size_t i = 0; i < parent.size(); ++i) parent[i] = static_cast<int>(i);
  auto find = [&](int x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  };
  for (const auto& g : k.groups)
    for (const std::string& name : g) {
      auto it = index.find(name);
      if (it == index.end()) throw Error("layer group names an unknown layer '" + name + "'");
      parent[find(it->second)] = find(index.at(g.front()));
    }
  std::map<int, std::vector<int>> by_root;
  for (size_t i = 0; i < parent.size(); ++i) by_root[find(static_cast<int>(i))].push_back(static_cast<int>(i));
  std::vector<std::vector<int>> out;
  for (auto& [root, members] : by_root)
    if (members.size() > 1) out.push_back(members);
  return out;
}

using Choices = std::vector<std::vector<std::pair<std::string, int>>>;  // per layer: (label, option or kKeepFloat)

// A group keeps the labels all members allow, in one order, so that equal indices mean equal choices. Returns the
// merged groups (layer indices) for the allocator.
std::vector<std::vector<int>> align_groups(const CompressionAnalysis& a, const Constraints& k, Choices& choices) {
  std::vector<std::vector<int>> groups;
  for (const std::vector<int>& g : merged_groups(a, k)) {
    std::vector<std::string> common;
    for (const auto& [label, idx] : choices[g.front()]) common.push_back(label);
    for (int l : g) {
      std::vector<std::string> keep;
      for (const std::string& label : common)
        for (const auto& c : choices[l])
          if (c.first == label) keep.push_back(label);
      common = keep;
    }
    if (common.empty()) {
      std::string names;
      for (int l : g) names += (names.empty() ? "" : ", ") + a.layers[l].layer;
      throw Error("layer group {" + names + "} has no option every member allows");
    }
    for (int l : g) {
      std::vector<std::pair<std::string, int>> aligned;
      for (const std::string& label : common)
        for (const auto& c : choices[l])
          if (c.first == label) aligned.push_back(c);
      choices[l] = aligned;
    }
    groups.push_back(g);
  }
  return groups;
}

// The largest size: every free layer at its biggest choice, every group at its biggest common choice.
int64_t largest_size(const std::vector<std::vector<AllocOption>>& options,
                     const std::vector<std::vector<int>>& groups) {
  int64_t largest = 0;
  std::vector<char> grouped(options.size(), 0);
  for (const auto& g : groups) {
    int64_t best = 0;
    for (size_t c = 0; c < options[g.front()].size(); ++c) {
      int64_t sum = 0;
      for (int l : g) sum += options[l][c].bytes;
      best = std::max(best, sum);
    }
    largest += best;
    for (int l : g) grouped[l] = 1;
  }
  for (size_t i = 0; i < options.size(); ++i)
    if (!grouped[i])
      largest += std::max_element(options[i].begin(), options[i].end(), [](const AllocOption& x, const AllocOption& y) {
                   return x.bytes < y.bytes;
                 })->bytes;
  return largest;
}

}  // namespace

LayerAllocator::LayerAllocator(const CompressionAnalysis& a, const Constraints& k) {
  for (const auto& [name, c] : k.layers)
    if (std::none_of(a.layers.begin(), a.layers.end(), [&](const LayerCandidates& l) { return l.layer == name; }))
      throw Error("constraint on unknown layer '" + name + "'");
  Choices choices;
  for (const auto& l : a.layers) {
    for (const auto& opt : l.options)
      if (opt.error < 0) throw Error(l.layer + ": option " + opt.label() + " has no global error yet");
    auto it = k.layers.find(l.layer);
    choices.push_back(allowed_choices(l, it == k.layers.end() ? LayerConstraint() : it->second));
  }
  AllocConstraints ac;
  ac.groups = align_groups(a, k, choices);
  std::vector<std::vector<AllocOption>> options;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerCandidates& l = a.layers[i];
    std::vector<AllocOption> o;
    std::vector<int> map;
    for (const auto& [label, idx] : choices[i]) {
      if (idx == kKeepFloat)
        o.push_back({4 * l.out_features * l.in_features, 0.0});
      else
        o.push_back({l.options[idx].bytes, l.options[idx].error});
      map.push_back(idx);
    }
    options.push_back(std::move(o));
    options_.push_back(std::move(map));
  }
  largest_ = largest_size(options, ac.groups);
  allocator_ = std::make_shared<const BudgetAllocator>(std::move(options), std::move(ac));
}

Allocation LayerAllocator::solve(int64_t budget) const {
  const std::string limits = " (smallest achievable " + std::to_string(min_bytes()) + " bytes, largest " +
                             std::to_string(max_bytes()) + " bytes)";
  if (budget < min_bytes())
    throw Error("budget " + std::to_string(budget) + " bytes is below the smallest achievable size" + limits);
  if (budget > max_bytes())
    throw Error("budget " + std::to_string(budget) + " bytes is above the largest achievable size" + limits);
  AllocResult r = allocator_->solve(budget);
  Allocation out{budget, {}, r.bytes, r.error};
  for (size_t i = 0; i < r.choice.size(); ++i) out.choice.push_back(options_[i][r.choice[i]]);
  return out;
}

Allocation allocate(const CompressionAnalysis& a, int64_t budget, const Constraints& constraints) {
  return LayerAllocator(a, constraints).solve(budget);
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
  apply_compressed_layers(model, compress_layers(model, a, alloc));
}

}  // namespace lorq
