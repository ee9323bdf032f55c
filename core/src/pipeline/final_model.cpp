#include "lorq/pipeline/final_model.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <map>
#include <set>

#include "lorq/common/error.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/sensitivity.h"

namespace lorq {

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

CandidateSettings refit_settings(const FinalModelSettings& s) {
  CandidateSettings c;
  c.quantizer = s.quantizer;
  c.gptq = s.gptq;
  return c;
}

// Every layer's XᵀX on `images` where compensation may use it (compensation_moment).
std::map<std::string, at::Tensor> compensation_moments(Model& model, const at::Tensor& images) {
  const auto all = layer_input_moments(model, images);
  std::map<std::string, at::Tensor> out;
  for (const auto& l : model.linear_layers()) {
    const at::Tensor m = compensation_moment(all, l.name);
    if (m.defined()) out[l.name] = m;
  }
  return out;
}
}  // namespace

FinalImages split_final_images(const ImageSet& set, const std::vector<std::string>& calibration_files, size_t count) {
  FinalImages out;
  out.train.source = out.held_out.source = set.source;
  std::map<std::string, const ImageItem*> by_path;
  for (const ImageItem& item : set.items) by_path.emplace(item.path, &item);
  std::set<std::string> used;
  for (const std::string& f : calibration_files) {
    if (!used.insert(f).second) continue;
    auto it = by_path.find(f);
    out.train.items.push_back(it == by_path.end() ? ImageItem{f, -1} : *it->second);
  }
  for (const ImageItem& item : set.items) {
    if (used.count(item.path)) continue;
    if (out.train.items.size() < count) {
      used.insert(item.path);
      out.train.items.push_back(item);
    } else {
      out.held_out.items.push_back(item);
    }
  }
  return out;
}

FinalModel build_final_model(const Model& float_model, const CompressionAnalysis& a, const Allocation& alloc,
                             const at::Tensor& images, const FinalModelSettings& s, const JobControl& job) {
  if (images.dim() != 4 || images.size(0) == 0) throw Error("build_final_model: no calibration images");
  FinalModel f;
  f.model = float_model.clone();  // a fresh float model; the caller's stays untouched
  Model& model = *f.model;
  auto t = std::chrono::steady_clock::now();
  if (s.blocks.per_token_bits > 0 && s.activations.enabled)
    throw Error("build_final_model: per-token and static activation quantization are exclusive");
  f.blocks = s.blocks;
  std::map<std::string, at::Tensor> lfh = a.lfh;  // WADS rescales it to the scaled weights
  if (s.blocks.wads) {
    f.blocks_report.wads = apply_wads_before_final_layers(model, images, s.blocks, &lfh, job);
    f.stage_seconds.emplace_back("wads", since(t));
    t = std::chrono::steady_clock::now();
  }
  if (s.activations.enabled) {
    // §8 on the float model; the folded, corrected weights are what the layers compress from here on.
    f.activations = quantize_activations(model, images, s.activations, job);
    f.activations_quantized = true;
    disable_activation_quantization(model);
    f.stage_seconds.emplace_back("activation quantization", since(t));
    // §9: the LFH of the rebuilt model (activation quantization off), then every layer refitted to it.
    t = std::chrono::steady_clock::now();
    const int64_t n = std::min<int64_t>(s.lfh_images, images.size(0));
    const auto H = label_free_hessian(model, images.slice(0, 0, n), s.lfh, job);
    f.stage_seconds.emplace_back("sensitivity (rebuilt model)", since(t));
    t = std::chrono::steady_clock::now();
    std::map<std::string, at::Tensor> moments;
    if (s.quantizer == Quantizer::Gptq) {
      enable_activation_quantization(model, f.activations);
      moments = compensation_moments(model, images);
      disable_activation_quantization(model);
    }
    f.layers = refit_layers(model, a, alloc, H, refit_settings(s), &moments);
  } else if (s.refit || s.blocks.wads) {  // WADS changed the weights: the analysis' codes are of the old ones
    std::map<std::string, at::Tensor> moments;
    if (s.quantizer == Quantizer::Gptq) moments = compensation_moments(model, images);
    f.layers = refit_layers(model, a, alloc, lfh, refit_settings(s), &moments);
  } else {
    f.layers = compress_layers(model, a, alloc);
  }
  f.stage_seconds.emplace_back("final layers", since(t));
  if (s.blocks.recovery_steps > 0) {
    t = std::chrono::steady_clock::now();
    recover_biases_and_norms(model, f.layers, float_model, s.recovery_images.defined() ? s.recovery_images : images,
                             s.blocks, &f.blocks_report, job);
    f.stage_seconds.emplace_back("recovery", since(t));
  }
  if (s.round) {
    t = std::chrono::steady_clock::now();
    RoundingCheckpoint ckpt{s.rounding_checkpoint};
    try {
      f.rounding = round_layers(model, f.layers, images, s.rounding, job,
                                s.rounding_checkpoint.empty() ? nullptr : &ckpt, s.on_rounding_step);
    } catch (const Cancelled&) {
      // round_layers leaves the finished layers learned and the others at nearest rounding: a consistent model.
      if (!s.keep_learned_on_cancel) throw;
      f.rounding_cancelled = true;
    }
    f.stage_seconds.emplace_back("adaptive rounding", since(t));
  }
  for (const CompressedLayer& l : f.layers) {
    if (l.form == LayerForm::Float) continue;
    ++f.compressed_layers;
    f.learned_layers += l.rounding_learned ? 1 : 0;
  }
  apply_compressed_layers(model, f.layers);
  if (f.activations_quantized) enable_activation_quantization(model, f.activations);
  install_per_token_activations(model, f.layers, s.blocks.per_token_bits);
  return f;
}

}  // namespace lorq
