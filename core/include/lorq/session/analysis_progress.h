#pragma once
// The analysis' stages and what each costs, for one progress bar and ETA over the whole analysis
// (lorq/common/stage_progress.h). Torch-free: the workbench and the CLI use it.
#include <string>
#include <utility>
#include <vector>

#include "lorq/common/stage_progress.h"
#include "lorq/session/api.h"

namespace lorq::api {

// The stages analyze() reports, in order, with their expected seconds. Fixed estimates relative to each other, from
// DeiT-Tiny on 2 cores (README / bench_pipeline: 32 calibration images, LFH 8 images x 32 projections, 3 anchors:
// calibration 2.0 s, sensitivity 28.4 s, candidates 2.8 s, global error 206 s; the LFH estimate of the global error
// 3.4 s) scaled by the settings that drive each stage. `last_run` (a previous analysis' stage_seconds() of the same
// model and settings) replaces the estimates of the stages it measured and rescales the others.
std::vector<StageCost> analysis_stage_costs(const AnalysisSettings& settings,
                                            const std::vector<std::pair<std::string, double>>& last_run = {});

}  // namespace lorq::api
