#include "lorq/pipeline/calibration.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
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
    ImageBatch b = load_batch(subset, begin, end, model.config().preprocessing, 2);
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
  c.images = at::cat(images);

  // Float reference: the logits, and the stage inputs that fit the memory allowance (evenly spaced checkpoints).
  const int n = model.num_stages();
  c.batch = s.batch;
  c.stage_inputs.assign(n, at::Tensor());
  std::vector<char> keep(n, 0);
  std::vector<std::vector<at::Tensor>> per_stage(n);
  std::vector<at::Tensor> logits;
  for (int64_t b0 = 0; b0 < decoded; b0 += s.batch) {
    job.check();
    at::Tensor x = model.embed(c.images.slice(0, b0, std::min<int64_t>(decoded, b0 + s.batch)));
    if (b0 == 0) {
      const int64_t per_stage_bytes = decoded * (x.numel() / x.size(0)) * 4;
      const int64_t fit = std::max<int64_t>(1, s.max_stage_bytes / std::max<int64_t>(1, per_stage_bytes));
      const int64_t every = (n + fit - 1) / fit;
      for (int st = 0; st < n; st += static_cast<int>(every)) keep[st] = 1;
      if (fit < n)
        c.warnings.push_back("stage inputs of " + std::to_string(decoded) + " images exceed the memory allowance: " +
                             "keeping every " + std::to_string(every) + ". stage, recomputing the others");
    }
    for (int st = 0; st < n; ++st) {
      if (keep[st]) per_stage[st].push_back(x);
      x = model.run_stage(st, x);
    }
    logits.push_back(model.finish(x));
  }
  for (int st = 0; st < n; ++st)
    if (keep[st]) c.stage_inputs[st] = at::cat(per_stage[st]);
  c.reference_logits = at::cat(logits);
  return c;
}

at::Tensor Calibration::stage_input(Model& model, int stage) const {
  if (stage < 0 || stage >= static_cast<int>(stage_inputs.size()))
    throw Error("calibration: no stage " + std::to_string(stage));
  if (stage_inputs[stage].defined()) return stage_inputs[stage];
  if (streamed_stage_ == stage) return streamed_;
  c10::NoGradGuard no_grad;
  int from = stage;
  while (from >= 0 && !stage_inputs[from].defined()) --from;
  at::Tensor x;
  if (streamed_stage_ > from && streamed_stage_ < stage) {
    from = streamed_stage_;
    x = streamed_;
  } else if (from >= 0) {
    x = stage_inputs[from];
  }
  const int64_t N = images.size(0);
  std::vector<at::Tensor> out;
  for (int64_t b0 = 0; b0 < N; b0 += batch) {
    const int64_t b1 = std::min(N, b0 + batch);
    at::Tensor xb = from >= 0 ? x.slice(0, b0, b1) : model.embed(images.slice(0, b0, b1));
    for (int st = std::max(from, 0); st < stage; ++st) xb = model.run_stage(st, xb);
    out.push_back(xb);
  }
  streamed_ = at::Tensor();  // free the previous one before keeping the next
  streamed_ = at::cat(out);
  streamed_stage_ = stage;
  return streamed_;
}

double output_nsr(Model& model, const Calibration& calib, const std::string& layer, const at::Tensor& W_tilde,
                  int batch) {
  c10::NoGradGuard no_grad;
  const LinearLayerInfo& info = model.layer(layer);
  const at::Tensor Wt = W_tilde.reshape({info.out_features, info.in_features}).to(at::kFloat).contiguous();
  // Before the override: a stage input that was not kept is recomputed with the float model.
  const at::Tensor stage_in = info.stage < 0 ? at::Tensor() : calib.stage_input(model, info.stage);
  model.set_linear_override(
      layer, [&Wt](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) { return at::linear(x, Wt, b); });
  double noise = 0, signal = 0;
  try {
    const int64_t N = calib.reference_logits.size(0);
    for (int64_t b0 = 0; b0 < N; b0 += batch) {
      const int64_t b1 = std::min(N, b0 + batch);
      at::Tensor y;
      if (info.stage < 0) {
        y = model.forward(calib.images.slice(0, b0, b1));
      } else {
        y = model.run_from(info.stage, stage_in.slice(0, b0, b1));
      }
      const at::Tensor ref = calib.reference_logits.slice(0, b0, b1);
      const double w = double(b1 - b0) / batch;  // the spec sums per-batch means over equal batches
      noise += w * (y - ref).pow(2).mean().item<double>();
      signal += w * ref.pow(2).mean().item<double>();
    }
  } catch (...) {
    model.clear_linear_override(layer);
    throw;
  }
  model.clear_linear_override(layer);
  return signal > 0 ? noise / signal : 0.0;
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

double estimated_nsr(const at::Tensor& W, const at::Tensor& W_tilde, const at::Tensor& lfh, const Calibration& calib) {
  const double signal = calib.reference_logits.to(at::kDouble).pow(2).mean().item<double>();
  const double classes = static_cast<double>(calib.reference_logits.size(1));
  const double noise =
      (lfh.to(at::kDouble) * (W.to(at::kDouble) - W_tilde.to(at::kDouble)).pow(2)).sum().item<double>();
  return signal > 0 ? noise / (classes * signal) : 0.0;
}

void measure_global_errors(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                           const GlobalErrorSettings& s, const JobControl& job,
                           const std::map<std::string, at::Tensor>* lfh) {
  if (s.estimate && !lfh) throw Error("global error estimate: no label-free Hessian given");
  c10::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  int64_t done = 0;
  for (LayerCandidates& lc : layers) {
    job.check();
    const at::Tensor W = model.weight(lc.layer);
    const bool estimate = s.estimate && lc.low_rank_allowed && lfh->count(lc.layer);
    auto error_of = [&](const LayerOption& o) {
      const at::Tensor Wt = compressed_weight(lc, o, W);
      return estimate ? estimated_nsr(W, Wt, lfh->at(lc.layer), calib)
                      : output_nsr(model, calib, lc.layer, Wt, s.batch);
    };
    std::map<std::pair<int, int>, std::vector<size_t>> groups;  // bit pair -> option indices by rank
    for (size_t i = 0; i < lc.options.size(); ++i) {
      LayerOption& o = lc.options[i];
      if (o.kind == OptionKind::Quant) {
        o.error = error_of(o);
        o.measured = true;
      } else {
        groups[{o.bits_a, o.bits_b}].push_back(i);
      }
    }
    for (auto& [pair, idx] : groups) {
      std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return lc.options[a].rank < lc.options[b].rank; });
      const std::vector<size_t> anchors = anchor_positions(idx.size(), static_cast<size_t>(s.anchors));
      for (size_t a : anchors) {
        LayerOption& o = lc.options[idx[a]];
        o.error = error_of(o);
        o.measured = true;
      }
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
    ++done;
    job.report({"global error", done, static_cast<int64_t>(layers.size()), seconds_since(start), lc.layer});
  }
}

}  // namespace lorq
