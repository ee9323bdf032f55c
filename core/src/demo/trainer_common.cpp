#include "trainer_common.h"

#include <ATen/ATen.h>
#include <torch/serialize.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgproc.hpp>

#include "lorq/common/error.h"
#include "lorq/io/hf_resize.h"

namespace lorq::demo_training {

at::Tensor scene_input(const cv::Mat& bgr, const Preprocessing& pp) {
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  const at::Tensor image = at::from_blob(rgb.data, {rgb.rows, rgb.cols, 3}, at::kByte).clone();
  return hf_normalize(hf_resize_bilinear(image, pp.input_height, pp.input_width), pp.mean, pp.std);
}

void clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> norms;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) norms.push_back(p.grad().norm());
  }
  if (norms.empty()) return;
  const double total = at::stack(norms).norm().item<double>();
  if (!(total > max_norm)) return;
  const double scale = max_norm / (total + 1e-6);
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) p.mutable_grad().mul_(scale);
  }
}

double warmup_cosine_lr(int64_t step, int64_t steps, double base_lr) {
  const int64_t warmup = std::max<int64_t>(1, steps / 20);
  if (step < warmup) return base_lr * double(step + 1) / double(warmup);
  return 0.5 * base_lr * (1 + std::cos(M_PI * double(step - warmup) / double(std::max<int64_t>(1, steps - warmup))));
}

Optimizer make_adamw(const std::vector<std::pair<std::string, at::Tensor>>& named, double lr, double weight_decay,
                     bool (*no_decay)(const std::string& key)) {
  std::vector<at::Tensor> decay, plain;
  for (const auto& [key, t] : named) {
    t.requires_grad_(true);
    (t.dim() >= 2 && !no_decay(key) ? decay : plain).push_back(t);
  }
  Optimizer o;
  o.params = decay;
  o.params.insert(o.params.end(), plain.begin(), plain.end());
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(
      decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).weight_decay(weight_decay)));
  groups.emplace_back(plain,
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(lr).weight_decay(0)));
  o.adamw = std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(lr));
  return o;
}

void set_lr(torch::optim::AdamW& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
}

void save_optimizer(torch::optim::AdamW& opt, const std::string& path) {
  const std::string tmp = path + ".tmp";
  torch::save(opt, tmp);
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(path, "cannot write the optimizer state (" + ec.message() + ")");
}

void load_optimizer(torch::optim::AdamW& opt, const std::string& path) {
  try {
    torch::load(opt, path);
  } catch (const c10::Error& e) {
    throw Error(path, std::string("cannot read the optimizer state: ") + e.what_without_backtrace());
  }
}

}  // namespace lorq::demo_training
