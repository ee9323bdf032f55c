#pragma once
// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") over plain ATen tensors,
// step for step as torch.optim.RAdam (PyTorch 1.13, no weight decay): the adaptive rounding of spec §10.3 uses it,
// and LibTorch 1.13's C++ frontend has no RAdam. Written on ATen alone so that no translation unit of the engine
// needs <torch/torch.h>.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace lorq {

struct RAdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
};

// For each parameter θ with gradient g, at step t (1-based):
//   m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  m̂ = m/(1−β1^t)
//   ρ∞ = 2/(1−β2) − 1;    ρ_t = ρ∞ − 2t·β2^t/(1−β2^t)
//   ρ_t > 5:  θ ← θ − lr·m̂·r_t·√(1−β2^t)/(√v + eps),  r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t))
//   else:     θ ← θ − lr·m̂                          (the un-adapted warm-up steps)
class RAdam {
 public:
  // params: leaf tensors with requires_grad; updated in place (outside autograd).
  RAdam(std::vector<at::Tensor> params, RAdamOptions options);
  // One update from each parameter's .grad() (a parameter without a gradient is skipped, its moments kept).
  void step();
  void zero_grad();
  int64_t steps() const { return step_; }
  const RAdamOptions& options() const { return options_; }

 private:
  std::vector<at::Tensor> params_, exp_avg_, exp_avg_sq_;
  RAdamOptions options_;
  int64_t step_ = 0;
};

}  // namespace lorq
