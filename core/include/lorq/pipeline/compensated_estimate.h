#pragma once
// A first allocation for error-compensated (gptq) analyses: the global errors estimated before they are measured
// cross-fitted (pipeline/cross_fit.h), as pipeline/progressive_errors.h does for nearest rounding.
//
// The label-free Hessian estimate Σ H ⊙ (W − W̃)² weighs the weight change elementwise, as if the layer's inputs
// were uncorrelated. GPTQ exploits their correlation: it makes the weight change larger and the output change
// smaller, so the plain estimate overrates every compensated option. Here a compensated option's estimate is the LFH
// estimate of its nearest-rounded counterpart (a Q(b): nearest rounding on the range search's LFH-weighted grid, as
// the nearest quantizer makes it, since GPTQ's rows may have chosen other grids (quant/gptq.h: compensated_rows);
// low rank: the same grids and factors, rounded from A and B) times the ratio of
// the two output errors tr(ΔW J ΔWᵀ) on the layer's input moment, taken out of fold as the measurement is:
//   e ≈ LFH(W − W̃ₙ) · Σₖ tr(ΔWₖ Jₙₒₜ ₖ ΔWₖᵀ) / tr(ΔWₙ (J₀ + J₁) ΔWₙᵀ),
// ΔWₖ the option's weight change with the values fitted on fold k, J the folds' own moments. The LFH carries how
// much the network downstream amplifies this layer's output change; the ratio carries how much of the nearest
// output change the compensation removes on images it was not fitted to. Cost: a few [m, n]·[n, n] products per
// anchored option, no forward pass.
#include <map>
#include <string>

#include "lorq/common/progress.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/cross_fit.h"

namespace lorq {

// The estimated errors of layers[index] (which must have an LFH in `lfh`): its anchored options as above (an option
// without compensated values: its plain LFH estimate), the others interpolated as measure_layer_global_errors does;
// marks the layer not measured. Without folds (fewer than two calibration images) the plain LFH estimate of every
// option. Returns the log line's detail.
std::string estimate_compensated_layer_errors(Model& model, const Calibration& calib, LayerCandidates& layer,
                                              size_t index, const CrossFit& fit, const GlobalErrorSettings& settings,
                                              const std::map<std::string, at::Tensor>& lfh);

// The folds' fits (cross_fit_candidates) and every layer of `analysis` estimated as above, a layer without an LFH
// measured cross-fitted: the first pass of estimate_then_measure_cross_fitted_global_errors, and the whole global
// error stage of a gptq analysis with GlobalErrorSettings::estimate (lorq --estimate). Appends the stages
// "cross-fit" and "global error estimate" to analysis.stage_seconds; returns the fit for a measurement.
// `fold_moments`: as cross_fit_candidates'.
CrossFit estimate_cross_fitted_global_errors(Model& model, const Calibration& calib, CompressionAnalysis& analysis,
                                             const GptqSettings& gptq, const GlobalErrorSettings& settings,
                                             const std::map<std::string, at::Tensor>& lfh,
                                             const std::map<std::string, InputMoment>* shared_moments,
                                             const JobControl& job,
                                             std::map<std::string, InputMoment>* fold_moments = nullptr);

// The cross-fitted global error stage of a gptq analysis in two passes (estimate_then_measure_global_errors'
// counterpart): the folds' fits (cross_fit_candidates: the candidates' compensated values are final from here on),
// every layer estimated as above (a layer without an LFH measured cross-fitted at once), `publish(analysis)`, then
// every layer measured cross-fitted. The final errors equal measure_cross_fitted_global_errors' bit for bit (the
// same fits and the same measurement). Stages "cross-fit" (the fits), "global error estimate" and "global error"
// are appended to analysis.stage_seconds. Throws Cancelled: what was published stays a complete (estimated) analysis.
void estimate_then_measure_cross_fitted_global_errors(Model& model, const Calibration& calib,
                                                      CompressionAnalysis& analysis, const GptqSettings& gptq,
                                                      const GlobalErrorSettings& settings,
                                                      const std::map<std::string, at::Tensor>& lfh,
                                                      const std::map<std::string, InputMoment>* shared_moments,
                                                      const JobControl& job, const AnalysisRevisionFn& publish,
                                                      std::map<std::string, InputMoment>* fold_moments = nullptr);

}  // namespace lorq
