#include "lorq/quant/radam.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>

#include "lorq/common/error.h"

namespace lorq {

RAdam::RAdam(std::vector<at::Tensor> params, RAdamOptions options) : params_(std::move(params)), options_(options) {
  if (!(options_.lr > 0) || options_.beta1 < 0 || options_.beta1 >= 1 || options_.beta2 < 0 || options_.beta2 >= 1)
    throw Error("RAdam: lr must be > 0 and the betas in [0, 1)");
  for (const at::Tensor& p : params_) {
    if (!p.requires_grad()) throw Error("RAdam: every parameter must require a gradient");
    exp_avg_.push_back(at::zeros_like(p));
    exp_avg_sq_.push_back(at::zeros_like(p));
  }
}

void RAdam::step() {
  c10::NoGradGuard no_grad;
  ++step_;
  const double t = static_cast<double>(step_), b1 = options_.beta1, b2 = options_.beta2;
  const double bias_correction1 = 1 - std::pow(b1, t);
  const double bias_correction2 = 1 - std::pow(b2, t);
  const double rho_inf = 2 / (1 - b2) - 1;
  const double rho_t = rho_inf - 2 * t * std::pow(b2, t) / bias_correction2;
  for (size_t i = 0; i < params_.size(); ++i) {
    const at::Tensor g = params_[i].grad();
    if (!g.defined()) continue;
    exp_avg_[i].mul_(b1).add_(g, 1 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1 - b2);
    if (rho_t > 5) {
      const double rect = std::sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t));
      // θ −= (lr·rect·√bc2/bc1) · m / (√v + eps)
      params_[i].addcdiv_(exp_avg_[i], exp_avg_sq_[i].sqrt().add_(options_.eps),
                          -options_.lr * rect * std::sqrt(bias_correction2) / bias_correction1);
    } else {
      params_[i].add_(exp_avg_[i], -options_.lr / bias_correction1);
    }
  }
}

void RAdam::zero_grad() {
  for (at::Tensor& p : params_) {
    at::Tensor g = p.mutable_grad();
    if (g.defined()) g.zero_();
  }
}

}  // namespace lorq
