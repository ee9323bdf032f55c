#include "lorq/session/analysis_progress.h"

#include <algorithm>

namespace lorq::api {

std::vector<StageCost> analysis_stage_costs(const AnalysisSettings& s,
                                            const std::vector<std::pair<std::string, double>>& last_run) {
  const double images = std::max(1, s.calibration_images) / 32.0;
  const double lfh =
      std::max(1, std::min(s.lfh_images, s.calibration_images)) / 8.0 * std::max(1, s.projections) / 32.0;
  // Measured options per layer: 5 Q widths and `anchors` ranks for each of the ~3 factor-bit pairs on the front.
  // Calibrated errors measure Q2..Q4 and one rank per pair.
  const double anchors =
      s.calibrated_errors ? (3.0 + 3.0) / (5.0 + 3.0 * 3) : (5.0 + 3.0 * std::max(2, s.anchors)) / (5.0 + 3.0 * 3);
  std::vector<StageCost> plan{{"calibration", 2.0 * images}, {"sensitivity", 28.4 * lfh}};
  // Error compensation (GPTQ) measures every layer's input moment first; about one float pass per image.
  if (s.quantizer == "gptq")
    plan.push_back({"input moments", 2.0 * std::max(s.calibration_images, s.gptq_images) / 32.0});
  // DeiT-Tiny at 32 images: 2.3 s nearest, 10.3 s gptq (sweeps, and the row grids at 2 and 3 bits).
  const bool gptq = s.quantizer == "gptq";
  // The damping's cross-validation: each half's moments (one float pass in all) and four dampings' sweeps at Q3.
  if (gptq && s.gptq_damping <= 0) plan.push_back({"damping", 6.0 * images});
  plan.push_back({"candidates", gptq ? 10.3 : 2.8});
  // GPTQ's cross-fit fits each half of the calibration images' compensation before any global error (8.6 s).
  if (gptq) plan.push_back({"cross-fit", 8.6 * images});
  // A progressive analysis (CompressionSession::analyze with revisions) estimates every layer's errors first.
  if (!s.estimate) plan.push_back({"global error estimate", gptq ? 4.9 : 3.4});
  plan.push_back({"global error", s.estimate ? 3.4 : 206.0 * images * anchors});

  double measured = 0, estimated = 0;
  for (const StageCost& c : plan)
    for (const auto& [stage, seconds] : last_run)
      if (stage == c.stage && seconds > 0) {
        measured += seconds;
        estimated += c.seconds;
      }
  if (measured <= 0 || estimated <= 0) return plan;
  // This machine and model against the estimates, for the stages the last run did not measure.
  const double scale = measured / estimated;
  for (StageCost& c : plan) {
    double seconds = -1;
    for (const auto& [stage, sec] : last_run)
      if (stage == c.stage && sec > 0) seconds = sec;
    c.seconds = seconds > 0 ? seconds : c.seconds * scale;
  }
  return plan;
}

}  // namespace lorq::api
