#include "lorq/common/stage_progress.h"

#include <algorithm>

namespace lorq {

StagedProgress::StagedProgress(std::vector<StageCost> plan)
    : plan_(std::move(plan)), ran_seconds_(plan_.size(), 0.0), ran_(plan_.size(), 0) {
  for (StageCost& c : plan_) c.seconds = std::max(0.0, c.seconds);
}

bool StagedProgress::update(const Progress& p) {
  int index = -1;
  for (size_t i = 0; i < plan_.size(); ++i)
    if (plan_[i].stage == p.stage) index = static_cast<int>(i);
  if (index < 0) return false;
  if (index < current_) return true;  // a late report of a finished stage changes nothing
  if (index > current_ && current_ >= 0) ran_seconds_[current_] = current_elapsed_;  // the previous one ended
  current_ = index;
  ran_[index] = 1;
  current_fraction_ = p.total > 0 ? std::clamp(double(p.done) / double(p.total), 0.0, 1.0) : 0.0;
  current_elapsed_ = std::max(0.0, p.elapsed_s);
  return true;
}

double StagedProgress::fraction() const {
  double total = 0, done = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    total += plan_[i].seconds;
    if (static_cast<int>(i) < current_) done += plan_[i].seconds;
  }
  if (current_ >= 0) done += plan_[current_].seconds * current_fraction_;
  return total > 0 ? std::clamp(done / total, 0.0, 1.0) : 0.0;
}

double StagedProgress::eta_seconds() const {
  if (current_ < 0) return -1;
  // How fast the work that really ran went against the plan (cached stages ran in no time: not counted).
  double actual = current_elapsed_, planned = plan_[current_].seconds * current_fraction_;
  for (int i = 0; i < current_; ++i)
    if (ran_[i]) {
      actual += ran_seconds_[i];
      planned += plan_[i].seconds;
    }
  double future = 0;
  for (size_t i = current_ + 1; i < plan_.size(); ++i) future += plan_[i].seconds;
  const bool rate_known = current_fraction_ > 0 && current_elapsed_ > 0;
  if (planned <= 0 || actual <= 0)
    return future <= 0 && rate_known ? current_elapsed_ * (1 - current_fraction_) / current_fraction_ : -1;
  const double scale = actual / planned;
  const double rest_of_stage = rate_known ? current_elapsed_ * (1 - current_fraction_) / current_fraction_
                                          : plan_[current_].seconds * (1 - current_fraction_) * scale;
  return rest_of_stage + future * scale;
}

}  // namespace lorq
