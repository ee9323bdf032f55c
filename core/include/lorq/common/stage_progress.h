#pragma once
// One progress figure and ETA over a job made of stages of unequal cost (the analysis: calibration, sensitivity,
// candidates, global error). Each stage reports its own done/total; a plan gives every stage's expected cost
// (seconds of the last run, or fixed estimates relative to each other), so the overall fraction weighs each stage by
// its cost. The ETA uses the running stage's own rate for its remainder and, for the stages still to come, the plan
// scaled by how fast the stages that ran went against their plan. Stages that never report (loaded from a cache)
// count as done in no time. Torch-free (the workbench uses it).
#include <string>
#include <vector>

#include "lorq/common/progress.h"

namespace lorq {

struct StageCost {
  std::string stage;   // the Progress::stage name it reports under
  double seconds = 0;  // expected cost (only the ratios matter for the fraction)
};

class StagedProgress {
 public:
  StagedProgress() = default;
  explicit StagedProgress(std::vector<StageCost> plan);
  const std::vector<StageCost>& plan() const { return plan_; }

  // One report of the job; false (and nothing changes) for a stage the plan does not name.
  bool update(const Progress& p);
  double fraction() const;                      // 0..1 of the whole job
  double eta_seconds() const;                   // < 0 while unknown
  int stage_index() const { return current_; }  // -1 before the first report

 private:
  std::vector<StageCost> plan_;
  std::vector<double> ran_seconds_;  // per stage: its elapsed time when it ran (0: did not run / cached)
  std::vector<char> ran_;
  int current_ = -1;
  double current_fraction_ = 0, current_elapsed_ = 0;
};

}  // namespace lorq
