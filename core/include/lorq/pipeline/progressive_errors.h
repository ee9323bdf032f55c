#pragma once
// The global error stage in two passes, so that a complete allocation exists long before the measured errors do:
// every layer's errors estimated from the label-free Hessian first (seconds), then the estimated layers measured
// on the network one by one (the bulk of the analysis), the analysis published after each pass and each layer.
#include "lorq/common/progress.h"
#include "lorq/pipeline/compress.h"

namespace lorq {

// Fills the global errors of `analysis.layers` (whose other fields the revisions carry as they are) in two passes:
// 1. stage "global error estimate": the LFH estimate of every layer that has one (measure_global_errors with
//    settings.estimate; a layer without one is measured right away), then `publish(analysis)`;
// 2. stage "global error": each layer still estimated measured in network order, `publish(analysis)` after each but
//    the last (the caller holds the final analysis).
// The final errors equal measure_global_errors' without the estimate bit for bit: the same measurement of the same
// layer on the same calibration. Appends both stages' wall times to analysis.stage_seconds. Throws Cancelled between
// layers: what was published stays a complete analysis (estimated or partly measured).
void estimate_then_measure_global_errors(Model& model, const Calibration& calib, CompressionAnalysis& analysis,
                                         const GlobalErrorSettings& settings,
                                         const std::map<std::string, at::Tensor>& lfh, const JobControl& job,
                                         const AnalysisRevisionFn& publish);

}  // namespace lorq
