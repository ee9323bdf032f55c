#include "lorq/pipeline/calibration.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "lorq/common/error.h"

namespace lorq {

namespace {
double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

Calibration calibrate(Model& model, const ImageSet& set, const CalibrationSettings& s, const JobControl& job) {
  if (set.size() == 0) throw Error(set.source, "the calibration set holds no images");
  if (s.images < 1) throw Error("calibration: at least one image is needed");
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  at::Generator gen = at::detail::createCPUGenerator(s.seed);
  at::Tensor perm = at::randperm(static_cast<int64_t>(set.size()), gen, at::kLong);
  ImageSet subset;
  subset.source = set.source;
  for (int64_t i = 0; i < perm.size(0); ++i) subset.items.push_back(set.items[perm[i].item<int64_t>()]);

  Calibration c;
  std::vector<at::Tensor> images;
  int64_t decoded = 0;
  // Draw in order from the permutation until enough images decode.
  for (size_t begin = 0; begin < subset.size() && decoded < s.images; begin += s.batch) {
    job.check();
    const size_t end = std::min(subset.size(), begin + std::min<size_t>(s.batch, size_t(s.images - decoded)));
    ImageBatch b = load_batch(subset, begin, end, model.preprocessing(), 2);
    for (const auto& f : b.failed) c.warnings.push_back("skipped: " + f);
    for (size_t i = 0; i < b.indices.size(); ++i) c.files.push_back(subset.items[b.indices[i]].path);
    if (b.images.size(0) > 0) images.push_back(b.images);
    decoded += b.images.size(0);
    job.report({"calibration", decoded, s.images, seconds_since(start), ""});
  }
  if (decoded == 0) throw Error(set.source, "none of the calibration images could be decoded");
  if (decoded < s.images)
    c.warnings.push_back("only " + std::to_string(decoded) + " of the " + std::to_string(s.images) +
                         " requested calibration images are usable");
  c.images = pad_and_stack(images);  // images of different input sizes (YOLOS) share the padded size

  // Float reference: the outputs, and the stage inputs that fit the memory allowance (evenly spaced checkpoints,
  // chosen from the real sizes of the first batch's stage states).
  const int n = model.num_stages();
  c.batch = s.batch;
  c.stage_inputs.assign(n, StageState());
  std::vector<char> keep(n, 0);
  std::vector<std::vector<StageState>> per_stage(n);
  std::vector<ModelOutputs> outputs;
  for (int64_t b0 = 0; b0 < decoded; b0 += s.batch) {
    job.check();
    const int64_t b1 = std::min<int64_t>(decoded, b0 + s.batch);
    StageState x = model.embed(c.images.slice(0, b0, b1));
    for (int st = 0; st < n; ++st) {
      if (b0 == 0 || keep[st]) per_stage[st].push_back(x);
      x = model.run_stage(st, x);
    }
    outputs.push_back(model.finish(x));
    if (b0 == 0) {
      std::vector<int64_t> bytes(n);
      for (int st = 0; st < n; ++st) bytes[st] = state_bytes(per_stage[st][0]) / (b1 - b0) * decoded;
      // The smallest spacing whose checkpoints fit (with equal stage sizes: ceil(n / stages that fit)).
      int every = n;
      for (int k = 1; k <= n; ++k) {
        int64_t sum = 0;
        for (int st = 0; st < n; st += k) sum += bytes[st];
        if (sum <= s.max_stage_bytes) {
          every = k;
          break;
        }
      }
      for (int st = 0; st < n; st += every) keep[st] = 1;
      for (int st = 0; st < n; ++st)
        if (!keep[st]) per_stage[st].clear();
      if (every > 1)
        c.warnings.push_back("stage inputs of " + std::to_string(decoded) + " images exceed the memory allowance: " +
                             "keeping every " + std::to_string(every) + ". stage, recomputing the others");
    }
  }
  for (int st = 0; st < n; ++st)
    if (keep[st]) c.stage_inputs[st] = cat_batches(per_stage[st]);
  c.reference = ModelOutputs::cat(outputs);
  return c;
}

StageState Calibration::stage_input(Model& model, int stage) const {
  if (stage < 0 || stage >= static_cast<int>(stage_inputs.size()))
    throw Error("calibration: no stage " + std::to_string(stage));
  if (!stage_inputs[stage].empty()) return stage_inputs[stage];
  if (streamed_stage_ == stage) return streamed_;
  c10::NoGradGuard no_grad;
  int from = stage;
  while (from >= 0 && stage_inputs[from].empty()) --from;
  StageState x;
  if (streamed_stage_ > from && streamed_stage_ < stage) {
    from = streamed_stage_;
    x = streamed_;
  } else if (from >= 0) {
    x = stage_inputs[from];
  }
  const int64_t N = images.size(0);
  std::vector<StageState> out;
  for (int64_t b0 = 0; b0 < N; b0 += batch) {
    const int64_t b1 = std::min(N, b0 + batch);
    StageState xb = from >= 0 ? slice_batch(x, b0, b1) : model.embed(images.slice(0, b0, b1));
    for (int st = std::max(from, 0); st < stage; ++st) xb = model.run_stage(st, xb);
    out.push_back(xb);
  }
  streamed_.clear();  // free the previous one before keeping the next
  streamed_ = cat_batches(out);
  streamed_stage_ = stage;
  return streamed_;
}

double output_nsr(Model& model, const Calibration& calib, const std::string& layer, const at::Tensor& W_tilde,
                  int batch) {
  c10::NoGradGuard no_grad;
  const LinearLayerInfo& info = model.layer(layer);
  const at::Tensor Wt = W_tilde.reshape({info.out_features, info.in_features}).to(at::kFloat).contiguous();
  // Before the override: a stage input that was not kept is recomputed with the float model.
  const StageState stage_in = info.stage < 0 ? StageState() : calib.stage_input(model, info.stage);
  model.set_linear_override(
      layer, [&Wt](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) { return at::linear(x, Wt, b); });
  OutputError error(task_of(model));
  try {
    const int64_t N = calib.images.size(0);
    for (int64_t b0 = 0; b0 < N; b0 += batch) {
      const int64_t b1 = std::min(N, b0 + batch);
      const ModelOutputs y = info.stage < 0 ? model.forward(calib.images.slice(0, b0, b1))
                                            : model.run_from(info.stage, slice_batch(stage_in, b0, b1));
      const double w = double(b1 - b0) / batch;  // the spec sums per-batch means over equal batches
      error.add(y, calib.reference.slice(b0, b1), w);
    }
  } catch (...) {
    model.clear_linear_override(layer);
    throw;
  }
  model.clear_linear_override(layer);
  return error.value();
}

std::vector<double> output_nsrs(Model& model, const Calibration& calib, const std::string& layer,
                                const std::vector<at::Tensor>& W_tildes, int batch, int64_t max_pass_bytes) {
  c10::NoGradGuard no_grad;
  const LinearLayerInfo& info = model.layer(layer);
  std::vector<double> out;
  // The embedding's layer runs the whole network from the images: one option at a time.
  if (info.stage < 0 || max_pass_bytes <= 0) {
    for (const at::Tensor& Wt : W_tildes) out.push_back(output_nsr(model, calib, layer, Wt, batch));
    return out;
  }
  std::vector<at::Tensor> Wt;
  for (const at::Tensor& w : W_tildes)
    Wt.push_back(w.reshape({info.out_features, info.in_features}).to(at::kFloat).contiguous());
  const StageState stage_in = calib.stage_input(model, info.stage);
  const int64_t N = calib.images.size(0);
  const int64_t batch_bytes = std::max<int64_t>(1, state_bytes(slice_batch(stage_in, 0, std::min<int64_t>(N, batch))));
  const size_t per_pass = static_cast<size_t>(std::clamp<int64_t>(max_pass_bytes / batch_bytes, 1, 1 << 20));
  out.resize(Wt.size());
  for (size_t g0 = 0; g0 < Wt.size(); g0 += per_pass) {
    const size_t g1 = std::min(Wt.size(), g0 + per_pass);
    const int64_t k = static_cast<int64_t>(g1 - g0);
    // Copy j of the batch (rows j·b .. (j+1)·b - 1 of every tensor the layer sees) goes through option g0 + j.
    model.set_linear_override(layer, [&Wt, g0, k](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
      const int64_t rows = x.size(0) / k;
      std::vector<at::Tensor> y;
      for (int64_t j = 0; j < k; ++j) y.push_back(at::linear(x.slice(0, j * rows, (j + 1) * rows), Wt[g0 + j], b));
      return at::cat(y, 0);
    });
    std::vector<OutputError> errors(static_cast<size_t>(k), OutputError(task_of(model)));
    try {
      for (int64_t b0 = 0; b0 < N; b0 += batch) {
        const int64_t b1 = std::min(N, b0 + batch), n = b1 - b0;
        const StageState xb = slice_batch(stage_in, b0, b1);
        const ModelOutputs y = model.run_from(info.stage, k == 1 ? xb : cat_batches(std::vector<StageState>(k, xb)));
        const ModelOutputs ref = calib.reference.slice(b0, b1);
        const double w = double(n) / batch;  // the spec sums per-batch means over equal batches
        for (int64_t j = 0; j < k; ++j) errors[j].add(k == 1 ? y : y.slice(j * n, (j + 1) * n), ref, w);
      }
    } catch (...) {
      model.clear_linear_override(layer);
      throw;
    }
    model.clear_linear_override(layer);
    for (int64_t j = 0; j < k; ++j) out[g0 + j] = errors[j].value();
  }
  return out;
}

std::vector<size_t> anchor_positions(size_t L, size_t K) {
  std::vector<size_t> out;
  if (L == 0) return out;
  if (L <= K || K < 2) {
    for (size_t i = 0; i < L; ++i) out.push_back(i);
    return out;
  }
  for (size_t i = 0; i < K; ++i) {
    const size_t a = static_cast<size_t>(std::nearbyint(double(i) * double(L - 1) / double(K - 1)));
    if (out.empty() || out.back() != a) out.push_back(a);
  }
  return out;
}

double estimated_nsr(const at::Tensor& W, const at::Tensor& W_tilde, const at::Tensor& lfh, const Calibration& calib,
                     const Task& task) {
  // The LFH sums squared output changes over one image's output values, so the mean over values divides by how
  // many values one image has (the class count only for [N, classes] logits).
  const auto [name, weight] = task.error_outputs().at(0);
  const at::Tensor& ref = calib.reference.at(name);
  const double signal = ref.to(at::kDouble).pow(2).mean().item<double>();
  const double elements = static_cast<double>(ref.numel() / std::max<int64_t>(1, ref.size(0)));
  const double noise =
      (lfh.to(at::kDouble) * (W.to(at::kDouble) - W_tilde.to(at::kDouble)).pow(2)).sum().item<double>();
  return signal > 0 ? weight * noise / (elements * signal) : 0.0;
}

namespace {

// GlobalErrorSettings::calibrated: which of a layer's anchored options (indices into lc.options) are measured, and
// for each of the others the measured one whose ratio scales its estimate.
std::vector<int> calibration_sources(const LayerCandidates& lc, const std::vector<size_t>& anchored,
                                     const GlobalErrorSettings& s) {
  std::vector<int> source(anchored.size(), -1);  // -1: measured
  int widest_q = -1;                             // the widest measured Q option (position in `anchored`)
  std::map<std::pair<int, int>, std::vector<int>> pairs;
  for (size_t j = 0; j < anchored.size(); ++j) {
    const LayerOption& o = lc.options[anchored[j]];
    if (o.kind == OptionKind::Quant) {
      if (o.bits <= s.calibrate_above_bits && (widest_q < 0 || o.bits > lc.options[anchored[widest_q]].bits))
        widest_q = static_cast<int>(j);
    } else {
      pairs[{o.bits_a, o.bits_b}].push_back(static_cast<int>(j));
    }
  }
  for (size_t j = 0; j < anchored.size(); ++j) {
    const LayerOption& o = lc.options[anchored[j]];
    if (o.kind == OptionKind::Quant && o.bits > s.calibrate_above_bits && widest_q >= 0) source[j] = widest_q;
  }
  for (auto& [pair, js] : pairs) {
    std::sort(js.begin(), js.end(),
              [&](int a, int b) { return lc.options[anchored[a]].rank < lc.options[anchored[b]].rank; });
    const int middle = js[js.size() / 2];
    for (int j : js)
      if (j != middle) source[j] = middle;
  }
  return source;
}

// The measured options' errors (`measured`, in the order of their positions in `source`), and for the others their
// LFH estimate scaled by their source's measured/estimated ratio (1 where the source's estimate is 0).
std::vector<double> calibrated_errors(const Model& model, const Calibration& calib, const LayerCandidates& lc,
                                      const std::vector<int>& source, const std::vector<at::Tensor>& Wts,
                                      const std::vector<double>& measured, const at::Tensor& lfh) {
  const at::Tensor W = model.weight(lc.layer);
  std::vector<double> errors(source.size(), 0.0), estimate(source.size(), 0.0);
  // Estimates only where a ratio is formed: the scaled options and their sources.
  std::vector<char> needed(source.size(), 0);
  for (size_t j = 0; j < source.size(); ++j)
    if (source[j] >= 0) needed[j] = needed[source[j]] = 1;
  for (size_t j = 0; j < source.size(); ++j)
    if (needed[j]) estimate[j] = estimated_nsr(W, Wts[j], lfh, calib, task_of(model));
  size_t k = 0;
  for (size_t j = 0; j < source.size(); ++j)
    if (source[j] < 0) errors[j] = measured.at(k++);
  for (size_t j = 0; j < source.size(); ++j) {
    if (source[j] < 0) continue;
    const double e = estimate[source[j]];
    errors[j] = estimate[j] * (e > 0 ? errors[source[j]] / e : 1.0);
  }
  return errors;
}

}  // namespace

LayerMeasurementPlan plan_layer_measurement(const Model& model, const LayerCandidates& lc, const GlobalErrorSettings& s,
                                            bool estimate, const std::map<std::string, at::Tensor>* lfh) {
  c10::NoGradGuard no_grad;
  const at::Tensor W = model.weight(lc.layer);
  LayerMeasurementPlan plan;
  plan.estimate = estimate;
  // Which options are measured (or estimated): every Q option and each bit pair's anchor ranks.
  std::map<std::pair<int, int>, std::vector<size_t>> groups;  // bit pair -> option indices by rank
  for (size_t i = 0; i < lc.options.size(); ++i) {
    if (lc.options[i].kind == OptionKind::Quant)
      plan.anchored.push_back(i);
    else
      groups[{lc.options[i].bits_a, lc.options[i].bits_b}].push_back(i);
  }
  for (auto& [pair, idx] : groups) {
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return lc.options[a].rank < lc.options[b].rank; });
    plan.anchors_of.push_back(anchor_positions(idx.size(), static_cast<size_t>(s.anchors)));
    for (size_t a : plan.anchors_of.back()) plan.anchored.push_back(idx[a]);
    plan.groups.push_back(idx);
  }
  for (size_t i : plan.anchored) plan.W_tildes.push_back(compressed_weight(lc, lc.options[i], W));
  // As with estimate: a layer without a real LFH (the patch-embedding conv) is measured whole.
  plan.calibrated = s.calibrated && !estimate && lc.low_rank_allowed && lfh && lfh->count(lc.layer);
  if (plan.calibrated) plan.source = calibration_sources(lc, plan.anchored, s);
  return plan;
}

std::vector<at::Tensor> LayerMeasurementPlan::to_run() const {
  if (estimate) return {};
  if (!calibrated) return W_tildes;
  std::vector<at::Tensor> out;
  for (size_t j = 0; j < source.size(); ++j)
    if (source[j] < 0) out.push_back(W_tildes[j]);
  return out;
}

std::string finish_layer_measurement(const Model& model, const Calibration& calib, LayerCandidates& lc,
                                     const LayerMeasurementPlan& plan, const std::vector<double>& measured,
                                     const std::map<std::string, at::Tensor>* lfh) {
  const size_t expected = plan.estimate ? measured.size() : plan.to_run().size();
  if (measured.size() != expected)
    throw Error("global error of " + lc.layer + ": " + std::to_string(measured.size()) + " measurements for " +
                std::to_string(expected) + " options");
  const std::vector<double> errors =
      plan.calibrated ? calibrated_errors(model, calib, lc, plan.source, plan.W_tildes, measured, lfh->at(lc.layer))
                      : measured;
  for (size_t j = 0; j < plan.anchored.size(); ++j) {
    lc.options[plan.anchored[j]].error = errors.at(j);
    lc.options[plan.anchored[j]].measured = !plan.calibrated || plan.source[j] < 0;
  }
  for (size_t g = 0; g < plan.groups.size(); ++g) {
    const std::vector<size_t>& idx = plan.groups[g];
    const std::vector<size_t>& anchors = plan.anchors_of[g];
    // Between two anchors, interpolate linearly in the local loss Λ (not in rank).
    for (size_t k = 0; k + 1 < anchors.size(); ++k) {
      const LayerOption& lo = lc.options[idx[anchors[k]]];
      const LayerOption& hi = lc.options[idx[anchors[k + 1]]];
      for (size_t j = anchors[k] + 1; j < anchors[k + 1]; ++j) {
        LayerOption& o = lc.options[idx[j]];
        const double span = lo.local_loss - hi.local_loss;
        const double w = span > 0 ? (o.local_loss - hi.local_loss) / span : 0.5;
        o.error = w * lo.error + (1 - w) * hi.error;
        o.measured = false;
      }
    }
  }
  lc.errors_measured = !plan.estimate;
  return error_range_detail(lc, plan.estimate ? "estimated" : "measured");
}

std::string error_range_detail(const LayerCandidates& lc, const std::string& how) {
  double lo = 0, hi = 0;
  int count = 0;
  for (const LayerOption& o : lc.options)
    if (o.measured) {
      lo = count ? std::min(lo, o.error) : o.error;
      hi = count ? std::max(hi, o.error) : o.error;
      ++count;
    }
  char detail[160];
  std::snprintf(detail, sizeof detail, "error %.3g .. %.3g over %d %s options", lo, hi, count, how.c_str());
  return detail;
}

std::string measure_layer_global_errors(Model& model, const Calibration& calib, LayerCandidates& lc,
                                        const GlobalErrorSettings& s, bool estimate,
                                        const std::map<std::string, at::Tensor>* lfh,
                                        const AnchorEstimateFn& estimate_anchors) {
  if (estimate && (!lfh || !lfh->count(lc.layer)))
    throw Error("global error estimate: no label-free Hessian of layer " + lc.layer);
  c10::NoGradGuard no_grad;
  const LayerMeasurementPlan plan = plan_layer_measurement(model, lc, s, estimate, lfh);
  std::vector<double> errors;
  if (estimate && estimate_anchors) {
    errors = estimate_anchors(plan.anchored, plan.W_tildes);
  } else if (estimate) {
    const at::Tensor W = model.weight(lc.layer);
    for (const at::Tensor& Wt : plan.W_tildes)
      errors.push_back(estimated_nsr(W, Wt, lfh->at(lc.layer), calib, task_of(model)));
  } else {
    errors = output_nsrs(model, calib, lc.layer, plan.to_run(), s.batch, s.max_pass_bytes);
  }
  return finish_layer_measurement(model, calib, lc, plan, errors, lfh);
}

void measure_global_errors(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                           const GlobalErrorSettings& s, const JobControl& job,
                           const std::map<std::string, at::Tensor>* lfh) {
  if (s.estimate && !lfh) throw Error("global error estimate: no label-free Hessian given");
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (LayerCandidates& lc : layers) {
    job.check();
    const bool estimate = s.estimate && lc.low_rank_allowed && lfh->count(lc.layer);
    const std::string errors = measure_layer_global_errors(model, calib, lc, s, estimate, lfh);
    ++done;
    // One line per layer for the logs.
    const std::string detail = "layer " + std::to_string(done) + "/" + std::to_string(layers.size()) + " " +
                               lc.layer + ": " + errors;
    job.report({"global error", done, static_cast<int64_t>(layers.size()), seconds_since(start), detail});
  }
}

}  // namespace lorq
