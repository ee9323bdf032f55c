#pragma once
// Cross-fitted global errors for error-compensated candidates (issue 13).
//
// GPTQ fits each option's codes to the input moment XᵀX of the calibration images. Measuring that option's global
// error on the same images rewards the fit — most for aggressive options on wide-input layers (Q2 on an MLP's fc2:
// 768 inputs, about 8 token rows per input on 32 images) — and the allocator then over-trusts them. Here the
// calibration images are split into two folds: every option is compensated through one fold's moment and its
// global error measured on the other fold's images, and the two out-of-fold errors are averaged (weighted by the
// images measured). The same split decides, per compensated tensor, whether compensation is kept at all: only where
// its output error on the held-out fold's inputs, summed over both folds, is at most nearest rounding's; elsewhere
// that tensor is rounded to nearest, in the folds and in the candidates that are exported (their compensated values
// stay fitted to all calibration images).
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/pipeline/input_moments.h"

namespace lorq {

// The calibration restricted to images [begin, end): the images, the float reference and the kept stage inputs.
Calibration calibration_fold(const Calibration& calib, int64_t begin, int64_t end);

// One layer's compensation re-fitted on two folds (fit_moments[f]: XᵀX of fold f's inputs; undefined where a fold
// saw too few rows). On return `layer` keeps only the compensated tensors that pass the out-of-fold test (a
// second factor whose first factor lost its compensation is re-fitted through full_moment, the moment of all
// images), and folds[f] is `layer` with the values fitted on fold f instead. W: the layer's weight [m, n].
// judge_moments[f] (optional): fold f's own XᵀX when fit_moments[f] also holds images no fold is measured on
// (CandidateSettings::gptq_images); without it each fold is judged on the other's fit moment. A Q(b) whose rows
// chose their grids for the compensation (GptqSettings::row_grid_max_bits, quant/gptq.h: compensated_rows) and
// loses it gets the range search's grid for nearest rounding back, Hessian-weighted with `lfh` (the layer's LFH)
// when given; its rows left at nearest rounding in the candidates stay there in the folds.
void cross_fit_layer(LayerCandidates& layer, LayerCandidates folds[2], const at::Tensor& W,
                     const at::Tensor fit_moments[2], const at::Tensor& full_moment, const GptqSettings& settings,
                     const at::Tensor* judge_moments = nullptr, const at::Tensor& lfh = {});

// measure_cross_fitted_global_errors in two steps, so that an estimate can be published in between (the
// candidates' compensated values are final after the first step): the folds' fits with cross_fit_layer's decisions
// applied to `layers` (progress: stage "cross-fit", one step per layer, after the folds' "input moments"), then the
// measurement of every layer on both folds.
struct CrossFit {
  std::vector<int64_t> bounds;                    // {0, half, N}; empty: fewer than two images, no folds
  std::vector<LayerCandidates> folds[2];          // per layer, the values fitted on fold k (layer order)
  std::map<std::string, InputMoment> moments[2];  // fold k's own input moments (what fold 1 − k is judged on)
};
// `lfh`: the layers' LFH, for the nearest grids cross_fit_layer restores. `fold_moments` (optional, two maps): the
// halves' own moments when the caller took them already (layer_input_moments of calibration images [0, half) and
// [half, N), half = ⌈N/2⌉, as the damping choice does); moved from, instead of a second float pass.
CrossFit cross_fit_candidates(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                              const GptqSettings& gptq, const JobControl& job = {},
                              const std::map<std::string, InputMoment>* shared_moments = nullptr,
                              const std::map<std::string, at::Tensor>* lfh = nullptr,
                              std::map<std::string, InputMoment>* fold_moments = nullptr);
// Measures every layer of `layers` (those cross_fit_candidates fitted) cross-fitted; without folds,
// measure_global_errors. Each option's two fits run in one pass per batch pair: fold 0's images through fit 1's
// weights and fold 1's through fit 0's, so each pass is as large as a whole-calibration measurement's.
void measure_cross_fitted(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers, CrossFit fit,
                          const GlobalErrorSettings& settings, const JobControl& job = {},
                          const std::map<std::string, at::Tensor>* lfh = nullptr);
// The same measurement of one layer (layers[index] of the fit), equal to what measure_cross_fitted gives it.
void measure_cross_fitted_layer(Model& model, const Calibration& calib, LayerCandidates& layer, size_t index,
                                const CrossFit& fit, const GlobalErrorSettings& settings,
                                const std::map<std::string, at::Tensor>* lfh = nullptr);

// Fills every option's global error as measure_global_errors does, cross-fitted as above for the layers with
// compensated values (and applies cross_fit_layer's decisions to `layers`). With fewer than two calibration images
// it is measure_global_errors. Progress: "global error", one step per layer (both folds measured together).
// `shared_moments`: the moments of images beyond the calibration ones, added to both folds' fits (never measured on, so
// both folds may use them). cross_fit_candidates (`fold_moments` as there), then measure_cross_fitted.
void measure_cross_fitted_global_errors(Model& model, const Calibration& calib, std::vector<LayerCandidates>& layers,
                                        const GptqSettings& gptq, const GlobalErrorSettings& settings,
                                        const JobControl& job = {},
                                        const std::map<std::string, at::Tensor>* lfh = nullptr,
                                        const std::map<std::string, InputMoment>* shared_moments = nullptr,
                                        std::map<std::string, InputMoment>* fold_moments = nullptr);

}  // namespace lorq
