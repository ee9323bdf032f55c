#pragma once
// GPTQ's damping chosen by two-fold cross-validation on the calibration images.
//
// The damping λ of H + λ·mean(diag H)·I decides how far the compensation trusts the input moment of the few
// calibration images. Too little and it fits their noise; too much and it rounds almost to nearest. Which λ is best
// depends on how many input rows the moments hold: on DeiT-Tiny the cross-fitted predicted error at 3 bits was
// lowest at λ = 0.1 with 32 images and at 0.01 with 128 (closing notes of issue 13). So each candidate λ is scored
// as the global errors are measured, on images the fit did not see: every layer's Q(bits) is compensated on one half
// of the calibration images (plus the shared moment images, if any) and its output error tr(ΔW J ΔWᵀ) taken on the
// other half's own moment J, both ways, relative to nearest rounding's on the same grid. The score of λ is the mean
// of that ratio over layers weighted by each layer's LFH-estimated global error of nearest rounding: the estimated
// global error of uniform Q(bits) relative to nearest rounding's, as the first allocation estimates compensated
// options (compensated_estimate.h). No forward pass: two GPTQ sweeps per layer and λ. On DeiT-Tiny it chose 0.1
// with 32 images and 0.03 with 128 (network-level cross-fitted predicted errors at 3 bits: 0.3737 at 0.1 against
// 0.3916 at 0.01 with 32 images; 0.3550 at 0.03 against 0.3505 at 0.01 with 128, and the reverse at 4 bits).
#include <map>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/quant/gptq.h"

namespace lorq {

// The dampings an automatic choice considers: 0.01 (GPTQ's usual), 0.03, 0.1 and 0.3.
const std::vector<double>& default_gptq_damping_choices();

struct DampingChoice {
  double damping = 0;                             // the candidate with the lowest score (the first on ties)
  std::vector<std::pair<double, double>> scores;  // (candidate, weighted mean ratio) in the candidates' order
  int layers = 0;                                 // layers that could be scored
};

// `fold_moments[k]`: the input moments of the calibration images' half k (what the other half's fit is judged on);
// `shared`: moments of images beyond the calibration ones, added to both halves' fits (may be null). `lfh`: the
// layers' label-free Hessians, for the range search's grid (as the candidates choose it). Layers without a usable
// moment in either fit (compensation_moment) are not scored; when none can be (halves of very few images), the result
// is base.damping with no scores and `layers` 0. Throws lorq::Error when `candidates` is empty. Progress: stage
// "damping", one step per layer.
DampingChoice choose_gptq_damping(const Model& model, const std::map<std::string, InputMoment> fold_moments[2],
                                  const std::map<std::string, InputMoment>* shared,
                                  const std::map<std::string, at::Tensor>& lfh, const std::vector<double>& candidates,
                                  const GptqSettings& base = {}, int bits = 3, const JobControl& job = {});

// One layer's score terms: Σₖ tr(ΔWₖ Jₙₒₜ ₖ ΔWₖᵀ) for W's GPTQ values on grid p fitted through fit[k] with damping
// `damping`, and nearest rounding's tr(ΔWₙ (J₀ + J₁) ΔWₙᵀ). float64.
std::pair<double, double> cross_validated_errors(const at::Tensor& W, const RowQuantParams& p, const at::Tensor fit[2],
                                                 const at::Tensor judge[2], double damping,
                                                 const GptqSettings& base = {});

}  // namespace lorq
