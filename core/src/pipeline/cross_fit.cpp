#include "lorq/pipeline/cross_fit.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/quant/gptq.h"

namespace lorq {

Calibration calibration_fold(const Calibration& c, int64_t begin, int64_t end) {
  const int64_t N = c.images.size(0);
  if (begin < 0 || end > N || begin >= end)
    throw Error("calibration fold [" + std::to_string(begin) + ", " + std::to_string(end) + ") of " +
                std::to_string(N) + " images");
  Calibration f;
  if (static_cast<int64_t>(c.files.size()) == N) f.files.assign(c.files.begin() + begin, c.files.begin() + end);
  f.images = c.images.slice(0, begin, end);
  f.reference = c.reference.slice(begin, end);
  f.batch = c.batch;
  for (const StageState& s : c.stage_inputs) f.stage_inputs.push_back(s.empty() ? s : slice_batch(s, begin, end));
  return f;
}

namespace {

// Both folds' sweeps of one tensor, judged on the other fold's inputs against nearest rounding.
struct FoldValues {
  at::Tensor value[2];
  bool keep = false;
};

// J[k]: fold k's own inputs, on which the other fold's fit is judged.
FoldValues fit_on_folds(const at::Tensor& W, const RowQuantParams& p, const GptqFactor f[2], const at::Tensor J[2],
                        const GptqSettings& s, const at::Tensor& nearest_rows = {}) {
  FoldValues out;
  double compensated = 0, nearest = 0;
  const at::Tensor Wn = fake_quantize_rows(W, p);
  for (int k = 0; k < 2; ++k) {
    out.value[k] = gptq_values(W, p, f[k], s);
    // Rows the candidates left at nearest rounding (compensated_rows) stay there in the folds too.
    if (nearest_rows.defined()) out.value[k] = at::where(nearest_rows.unsqueeze(1), W, out.value[k]);
    compensated += output_error(W, fake_quantize_rows(out.value[k], p), J[1 - k]);
    nearest += output_error(W, Wn, J[1 - k]);
  }
  out.keep = compensated <= nearest;
  return out;
}

// Was this tensor compensated in the candidates at all (the in-sample guard stores W itself where it lost)?
bool compensated(const at::Tensor& values, const at::Tensor& source) {
  return !at::equal(values, source.to(at::kFloat).contiguous());
}

// A Q(b) whose rows chose their grids for the compensation (GptqSettings::row_grid_max_bits) and loses it: the
// range search's grid for nearest rounding again, as build_layer_candidates makes it for the nearest quantizer.
void restore_nearest_grid(LayerCandidates& c, LayerCandidates folds[2], int bits, const at::Tensor& W,
                          const at::Tensor& lfh, const GptqSettings& s) {
  if (bits > s.row_grid_max_bits) return;
  const bool use_h = lfh.defined();
  const RowQuantParams p = search_row_ranges(W, bits, use_h ? RangeError::Hessian : RangeError::Plain,
                                             use_h ? lfh.to(at::kFloat) : at::Tensor());
  c.weight_params[bits] = p;
  for (int k = 0; k < 2; ++k) folds[k].weight_params[bits] = p;
}

}  // namespace

void cross_fit_layer(LayerCandidates& c, LayerCandidates folds[2], const at::Tensor& W_in,
                     const at::Tensor fit_moments[2], const at::Tensor& full_moment, const GptqSettings& settings,
                     const at::Tensor* judge_moments, const at::Tensor& lfh) {
  c10::NoGradGuard no_grad;
  for (int k = 0; k < 2; ++k) {
    folds[k] = c;
    folds[k].weight_values.clear();
    folds[k].b_values.clear();
    folds[k].a_values.clear();
  }
  if (c.weight_values.empty() && c.b_values.empty() && c.a_values.empty()) return;
  const at::Tensor W = W_in.to(at::kFloat).reshape({c.out_features, c.in_features}).contiguous();
  if (!fit_moments[0].defined() || !fit_moments[1].defined()) {
    // A fold saw too few rows to compensate through: nothing can be judged out of fold, so nothing is kept.
    for (const auto& [bits, values] : c.weight_values) restore_nearest_grid(c, folds, bits, W, lfh, settings);
    c.weight_values.clear();
    c.b_values.clear();
    c.a_values.clear();
    return;
  }
  GptqSettings s = settings;
  s.dtype = at::kFloat;
  const at::Tensor H[2] = {fit_moments[0].to(at::kDouble), fit_moments[1].to(at::kDouble)};
  const at::Tensor J[2] = {judge_moments ? judge_moments[0].to(at::kDouble) : H[0],
                           judge_moments ? judge_moments[1].to(at::kDouble) : H[1]};
  const GptqFactor f[2] = {gptq_factorize(H[0], s), gptq_factorize(H[1], s)};

  for (auto it = c.weight_values.begin(); it != c.weight_values.end();) {
    const at::Tensor nearest_rows = (it->second == W).all(1);
    const FoldValues v = compensated(it->second, W)
                             ? fit_on_folds(W, c.weight_params.at(it->first), f, J, s, nearest_rows)
                             : FoldValues();
    if (!v.keep) {
      restore_nearest_grid(c, folds, it->first, W, lfh, s);
      it = c.weight_values.erase(it);
      continue;
    }
    for (int k = 0; k < 2; ++k) folds[k].weight_values[it->first] = v.value[k];
    ++it;
  }
  if (c.b_values.empty() && c.a_values.empty()) return;

  std::vector<int> refit_a;  // b_B whose first factor lost its compensation: Ã must be re-fitted to nearest B̃
  for (auto it = c.b_values.begin(); it != c.b_values.end();) {
    const bool was_compensated = compensated(it->second, c.factors.B);
    const FoldValues v = was_compensated ? fit_on_folds(c.factors.B, c.b_params.at(it->first), f, J, s) : FoldValues();
    if (!v.keep) {
      if (was_compensated) refit_a.push_back(it->first);
      it = c.b_values.erase(it);
      continue;
    }
    for (int k = 0; k < 2; ++k) folds[k].b_values[it->first] = v.value[k];
    ++it;
  }
  // Ã sees B̃x: its moment on fold k's inputs is B̃ H_k B̃ᵀ with the B̃ that fold exports. Rank order, as in
  // build_layer_candidates, so that a rank-r prefix does not depend on r.
  GptqSettings rank_order = s;
  rank_order.act_order = false;
  const at::Tensor Hfull = full_moment.defined() ? full_moment.to(at::kDouble) : H[0] + H[1];
  // B̃'s moments and their factorisation depend on b_B and the fold only: made once for the b_A sharing them.
  struct FactorInput {
    at::Tensor judge[2];
    GptqFactor factor[2];
  };
  std::map<int, FactorInput> by_bits_b;
  for (auto it = c.a_values.begin(); it != c.a_values.end();) {
    const auto [ba, bb] = it->first;
    const RowQuantParams& pa = c.a_params.at(ba);
    const RowQuantParams& pb = c.b_params.at(bb);
    const bool b_refit = std::find(refit_a.begin(), refit_a.end(), bb) != refit_a.end();
    if (!b_refit && !compensated(it->second, c.factors.A)) {
      it = c.a_values.erase(it);
      continue;
    }
    double comp = 0, nearest = 0;
    at::Tensor value[2];
    const at::Tensor An = fake_quantize_rows(c.factors.A, pa);
    auto input = by_bits_b.find(bb);
    if (input == by_bits_b.end()) {
      FactorInput in;
      for (int k = 0; k < 2; ++k) {
        const at::Tensor Bt = fake_quantize_rows(factor_b_source(folds[k], bb), pb).to(at::kDouble);
        in.factor[k] = gptq_factorize(at::mm(at::mm(Bt, H[k]), Bt.t()), rank_order);
        in.judge[k] = at::mm(at::mm(Bt, J[1 - k]), Bt.t());
      }
      input = by_bits_b.emplace(bb, std::move(in)).first;
    }
    for (int k = 0; k < 2; ++k) {
      const at::Tensor& judge = input->second.judge[k];
      value[k] = gptq_values(c.factors.A, pa, input->second.factor[k], rank_order);
      comp += output_error(c.factors.A, fake_quantize_rows(value[k], pa), judge);
      nearest += output_error(c.factors.A, An, judge);
    }
    if (comp > nearest) {
      it = c.a_values.erase(it);
      continue;
    }
    for (int k = 0; k < 2; ++k) folds[k].a_values[it->first] = value[k];
    if (b_refit) {
      const at::Tensor Bt = fake_quantize_rows(c.factors.B, pb).to(at::kDouble);
      it->second =
          gptq_values(c.factors.A, pa, gptq_factorize(at::mm(at::mm(Bt, Hfull), Bt.t()), rank_order), rank_order);
    }
    ++it;
  }
}

CrossFit cross_fit_candidates(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                              const GptqSettings& gptq, const JobControl& job,
                              const std::map<std::string, InputMoment>* shared_moments,
                              const std::map<std::string, at::Tensor>* lfh,
                              std::map<std::string, InputMoment>* fold_moments) {
  CrossFit out;
  const int64_t N = calib.images.size(0);
  if (N < 2) return out;
  c10::NoGradGuard no_grad;
  const int64_t half = (N + 1) / 2;
  out.bounds = {0, half, N};
  std::map<std::string, InputMoment>* moments = out.moments;
  for (int k = 0; k < 2; ++k)
    moments[k] = fold_moments ? std::move(fold_moments[k])
                              : layer_input_moments(model, calib.images.slice(0, out.bounds[k], out.bounds[k + 1]),
                                                    calib.batch, job);

  std::vector<LayerCandidates>* folds = out.folds;
  for (int k = 0; k < 2; ++k) folds[k].resize(layers.size());
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < layers.size(); ++i) {
    job.check();
    job.report({"cross-fit", static_cast<int64_t>(i), static_cast<int64_t>(layers.size()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), layers[i].layer});
    LayerCandidates& l = layers[i];
    LayerCandidates f[2];
    // Each fold fits on its images plus the shared ones (if any) and is judged on the other fold's images alone.
    const InputMoment* shared = nullptr;
    if (shared_moments) {
      const auto it = shared_moments->find(l.layer);
      if (it != shared_moments->end()) shared = &it->second;
    }
    at::Tensor fit[2], judge[2];
    for (int k = 0; k < 2; ++k) {
      const InputMoment& own = moments[k].at(l.layer);
      InputMoment with_shared = own;
      if (shared) {
        with_shared.xtx = own.xtx + shared->xtx;  // a new tensor: the fold's own moment stays as it is
        with_shared.rows += shared->rows;
      }
      fit[k] = compensation_moment({{l.layer, with_shared}}, l.layer);
      judge[k] = own.xtx;
    }
    at::Tensor full;
    if (fit[0].defined() && fit[1].defined()) full = shared ? judge[0] + judge[1] + shared->xtx : judge[0] + judge[1];
    at::Tensor layer_lfh;
    if (lfh && lfh->count(l.layer)) layer_lfh = lfh->at(l.layer);
    cross_fit_layer(l, f, model.weight(l.layer), fit, full, gptq, judge, layer_lfh);
    folds[0][i] = std::move(f[0]);
    folds[1][i] = std::move(f[1]);
  }
  return out;
}

namespace {

// The held-out calibration of fold k's fit (the other fold's images) and its share of the images.
Calibration held_out_of(const Calibration& calib, const CrossFit& fit, int k, double* weight) {
  Calibration held_out = calibration_fold(calib, fit.bounds[1 - k], fit.bounds[2 - k]);
  *weight = double(held_out.images.size(0)) / double(calib.images.size(0));
  return held_out;
}

// out[k][j]: the output NSR of fit k's weights[k][j] on the other fold's images, both folds in one pass. Batch t of
// each fold holds the images measuring that fold alone would batch together (the same per-batch weights); the two
// run as one batch with each image's rows through its fold's weights. A fold alone is half the calibration, and its
// passes ran at 0.66 of the matmul roof where the whole calibration's ran at 0.83 (DeiT-Tiny, bench_pipeline).
void cross_fitted_nsrs(Model& model, const Calibration& calib, const std::string& layer,
                       const std::vector<at::Tensor> weights[2], const std::vector<int64_t>& bounds, int batch,
                       std::vector<double> out[2]) {
  c10::NoGradGuard no_grad;
  if (weights[0].size() != weights[1].size())
    throw Error("cross-fitted global error of " + layer + ": the folds measure different options");
  const LinearLayerInfo& info = model.layer(layer);
  const StageState stage_in = info.stage < 0 ? StageState() : calib.stage_input(model, info.stage);
  const int64_t half = bounds[1], N = bounds[2];
  for (int k = 0; k < 2; ++k) out[k].assign(weights[0].size(), 0.0);
  for (size_t j = 0; j < weights[0].size(); ++j) {
    at::Tensor Wt[2];
    for (int k = 0; k < 2; ++k)
      Wt[k] = weights[k][j].reshape({info.out_features, info.in_features}).to(at::kFloat).contiguous();
    int64_t images_of_fold0 = 0, images = 0;  // of the pass running: fold 0's images come first
    model.set_linear_override(layer, [&](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
      // Fold 0's images are measured with fit 1's weights, fold 1's with fit 0's.
      if (images_of_fold0 == images) return at::linear(x, Wt[1], b);
      if (images_of_fold0 == 0) return at::linear(x, Wt[0], b);
      if (x.size(0) % images != 0)
        throw Error("cross-fitted global error of " + layer + ": its input's rows are not grouped by image");
      const int64_t split = images_of_fold0 * (x.size(0) / images);
      return at::cat({at::linear(x.slice(0, 0, split), Wt[1], b), at::linear(x.slice(0, split), Wt[0], b)}, 0);
    });
    std::vector<OutputError> errors(2, OutputError(task_of(model)));  // errors[k]: fit k's, on the other fold
    try {
      for (int64_t t0 = 0; t0 < std::max(half, N - half); t0 += batch) {
        const int64_t a0 = std::min(half, t0), a1 = std::min(half, t0 + batch);
        const int64_t c0 = std::min(N, half + t0), c1 = std::min(N, half + t0 + batch);
        images_of_fold0 = a1 - a0;
        images = images_of_fold0 + (c1 - c0);
        ModelOutputs y;
        if (info.stage < 0) {
          y = model.forward(at::cat({calib.images.slice(0, a0, a1), calib.images.slice(0, c0, c1)}, 0));
        } else {
          y = model.run_from(info.stage, cat_batches({slice_batch(stage_in, a0, a1), slice_batch(stage_in, c0, c1)}));
        }
        const int64_t n0 = a1 - a0;
        if (n0 > 0) errors[1].add(y.slice(0, n0), calib.reference.slice(a0, a1), double(n0) / batch);
        if (c1 > c0) errors[0].add(y.slice(n0, images), calib.reference.slice(c0, c1), double(c1 - c0) / batch);
      }
    } catch (...) {
      model.clear_linear_override(layer);
      throw;
    }
    model.clear_linear_override(layer);
    for (int k = 0; k < 2; ++k) out[k][j] = errors[k].value();
  }
}

// One layer's cross-fitted errors: each fold's fit measured on the other fold (cross_fitted_nsrs), filled in as
// measure_global_errors fills each fold's layer, then averaged into `layer` weighted by the images measured.
// Returns the log line's detail.
std::string measure_layer_on_both_folds(Model& model, const Calibration& calib, LayerCandidates& layer,
                                        LayerCandidates fits[2], const Calibration held_out[2], const double weight[2],
                                        const std::vector<int64_t>& bounds, const GlobalErrorSettings& settings,
                                        const std::map<std::string, at::Tensor>* lfh) {
  LayerMeasurementPlan plan[2];
  std::vector<at::Tensor> run[2];
  for (int k = 0; k < 2; ++k) {
    plan[k] = plan_layer_measurement(model, fits[k], settings, false, lfh);
    run[k] = plan[k].to_run();
  }
  std::vector<double> measured[2];
  cross_fitted_nsrs(model, calib, layer.layer, run, bounds, settings.batch, measured);
  std::vector<double> error(layer.options.size(), 0.0);
  for (int k = 0; k < 2; ++k) {
    finish_layer_measurement(model, held_out[k], fits[k], plan[k], measured[k], lfh);
    for (size_t j = 0; j < layer.options.size(); ++j) {
      error[j] += weight[k] * fits[k].options[j].error;
      layer.options[j].measured = fits[k].options[j].measured;
    }
    layer.errors_measured = fits[k].errors_measured;  // the same on both folds
  }
  for (size_t j = 0; j < layer.options.size(); ++j) layer.options[j].error = error[j];
  return error_range_detail(layer, "cross-fitted");
}

}  // namespace

void measure_cross_fitted_layer(Model& model, const Calibration& calib, LayerCandidates& layer, size_t index,
                                const CrossFit& fit, const GlobalErrorSettings& settings,
                                const std::map<std::string, at::Tensor>* lfh) {
  if (fit.bounds.empty()) {
    std::vector<LayerCandidates> one{layer};
    measure_global_errors(model, calib, one, settings, {}, lfh);
    layer = std::move(one[0]);
    return;
  }
  double weight[2];
  const Calibration held_out[2] = {held_out_of(calib, fit, 0, &weight[0]), held_out_of(calib, fit, 1, &weight[1])};
  LayerCandidates fits[2] = {fit.folds[0].at(index), fit.folds[1].at(index)};
  measure_layer_on_both_folds(model, calib, layer, fits, held_out, weight, fit.bounds, settings, lfh);
}

void measure_cross_fitted(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers, CrossFit fit,
                          const GlobalErrorSettings& settings, const JobControl& job,
                          const std::map<std::string, at::Tensor>* lfh) {
  if (fit.bounds.empty()) {
    measure_global_errors(model, calib, layers, settings, job, lfh);
    return;
  }
  c10::NoGradGuard no_grad;
  fit.moments[0].clear();
  fit.moments[1].clear();
  double weight[2];
  const Calibration held_out[2] = {held_out_of(calib, fit, 0, &weight[0]), held_out_of(calib, fit, 1, &weight[1])};
  const auto start = std::chrono::steady_clock::now();
  const int64_t L = static_cast<int64_t>(layers.size());
  for (int64_t i = 0; i < L; ++i) {
    job.check();
    LayerCandidates fits[2] = {std::move(fit.folds[0][i]), std::move(fit.folds[1][i])};
    const std::string errors =
        measure_layer_on_both_folds(model, calib, layers[i], fits, held_out, weight, fit.bounds, settings, lfh);
    job.report({"global error", i + 1, L,
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                "layer " + std::to_string(i + 1) + "/" + std::to_string(L) + " " + layers[i].layer + ": " + errors});
  }
}

void measure_cross_fitted_global_errors(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                                        const GptqSettings& gptq, const GlobalErrorSettings& settings,
                                        const JobControl& job, const std::map<std::string, at::Tensor>* lfh,
                                        const std::map<std::string, InputMoment>* shared_moments,
                                        std::map<std::string, InputMoment>* fold_moments) {
  measure_cross_fitted(model, calib, layers,
                       cross_fit_candidates(model, calib, layers, gptq, job, shared_moments, lfh, fold_moments),
                       settings, job, lfh);
}

}  // namespace lorq
