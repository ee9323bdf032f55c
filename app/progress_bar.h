#pragma once
// Terminal progress for lorq commands: a redrawn bar on a terminal, plain periodic lines otherwise (logs, CI).
#include <chrono>
#include <string>

#include "lorq/common/progress.h"
#include "lorq/common/stage_progress.h"

namespace lorq::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string unit = "images");
  void update(const Progress& p);
  void finish();  // ends the bar's line

 private:
  std::string unit_;
  bool tty_;
  bool drawn_ = false;
  double last_print_ = -1e9;
};

std::string format_duration(double seconds);

// Progress of a job of several stages (the analysis): a new bar line per stage, each naming the whole job's share
// done and its ETA weighted by the plan's stage costs ("sensitivity [analysis 14%, ETA 3:20]").
class StagedProgressBar {
 public:
  explicit StagedProgressBar(std::vector<StageCost> plan = {}, std::string job = "analysis",
                             std::string unit = "units")
      : bar_(std::move(unit)), overall_(std::move(plan)), job_(std::move(job)) {}
  JobControl job();
  void finish() { bar_.finish(); }

 private:
  ProgressBar bar_;
  StagedProgress overall_;
  std::string job_, stage_;
};

}  // namespace lorq::cli
