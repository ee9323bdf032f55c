#pragma once
// Terminal progress for lorq commands: a redrawn bar on a terminal, plain periodic lines otherwise (logs, CI).
#include <chrono>
#include <string>

#include "lorq/common/progress.h"

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

}  // namespace lorq::cli
