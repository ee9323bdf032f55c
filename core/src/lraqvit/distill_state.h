#pragma once
// The recovery step's optimizer and checkpoint. Private to core/src/lraqvit.
//
// AdamW is written out here (torch's formula: decoupled decay, bias-corrected moments) instead of using
// torch::optim::AdamW so that its whole state is two tensors per parameter and one step count, saved with the
// parameters in one safetensors file written atomically: a checkpoint is never half old, half new.
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace lorq::lraqvit::detail {

struct AdamWParam {
  std::string name;
  at::Tensor param;  // updated in place
  at::Tensor exp_avg, exp_avg_sq;
  bool decay = true;
};

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& params, const std::vector<bool>& decay);
  // One update at learning rate lr with the parameters' current gradients (a parameter without one is skipped),
  // then the gradients are cleared. `step` counts from 1.
  void step(int64_t step, double lr, double weight_decay);
  std::vector<AdamWParam>& params() { return params_; }
  const std::vector<AdamWParam>& params() const { return params_; }

 private:
  std::vector<AdamWParam> params_;
};

// Writes parameters and moments with the run's key and the number of finished steps.
void save_distill_checkpoint(const std::string& path, const std::string& key, int step, const AdamW& opt);
// Restores them into `opt` when the file exists and its key matches; returns the finished steps (0: nothing
// restored). A file that cannot be used is reported in `warning` and changes nothing.
int load_distill_checkpoint(const std::string& path, const std::string& key, AdamW& opt, std::string* warning);

}  // namespace lorq::lraqvit::detail
