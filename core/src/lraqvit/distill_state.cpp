#include "distill_state.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"

namespace lorq::lraqvit::detail {

namespace {
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
}

AdamW::AdamW(const std::vector<std::pair<std::string, at::Tensor>>& params, const std::vector<bool>& decay) {
  for (size_t i = 0; i < params.size(); ++i) {
    AdamWParam p;
    p.name = params[i].first;
    p.param = params[i].second;
    p.exp_avg = at::zeros_like(p.param);
    p.exp_avg_sq = at::zeros_like(p.param);
    p.decay = decay.at(i);
    params_.push_back(std::move(p));
  }
}

void AdamW::step(int64_t step, double lr, double weight_decay) {
  c10::NoGradGuard no_grad;
  const double bc1 = 1 - std::pow(kBeta1, double(step)), bc2 = 1 - std::pow(kBeta2, double(step));
  for (AdamWParam& p : params_) {
    const at::Tensor g = p.param.grad();
    if (!g.defined()) continue;
    if (p.decay && weight_decay > 0) p.param.mul_(1 - lr * weight_decay);
    p.exp_avg.mul_(kBeta1).add_(g, 1 - kBeta1);
    p.exp_avg_sq.mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
    const at::Tensor denom = (p.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(kEps);
    p.param.addcdiv_(p.exp_avg, denom, -lr / bc1);
    p.param.mutable_grad() = at::Tensor();
  }
}

void save_distill_checkpoint(const std::string& path, const std::string& key, int step, const AdamW& opt) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const AdamWParam& p : opt.params()) {
    tensors.emplace_back("param/" + p.name, p.param.detach());
    tensors.emplace_back("exp_avg/" + p.name, p.exp_avg);
    tensors.emplace_back("exp_avg_sq/" + p.name, p.exp_avg_sq);
  }
  write_tensors(path, tensors, {{"lorq_distill_key", key}, {"step", std::to_string(step)}});
}

int load_distill_checkpoint(const std::string& path, const std::string& key, AdamW& opt, std::string* warning) {
  if (path.empty() || !std::filesystem::exists(path)) return 0;
  try {
    SafetensorsFile f = SafetensorsFile::open(path);
    const auto& meta = f.metadata();
    if (!meta.count("lorq_distill_key") || meta.at("lorq_distill_key") != key)
      throw Error(path, "stale checkpoint (made for other layers, images or settings)");
    const int step = std::stoi(meta.at("step"));
    const auto tensors = read_all_tensors(f, false);
    // Validate everything first, so that a bad file changes nothing.
    std::vector<std::pair<at::Tensor, at::Tensor>> copies;
    for (AdamWParam& p : opt.params()) {
      for (const auto& [prefix, dst] : {std::pair<std::string, at::Tensor>{"param/", p.param},
                                        {"exp_avg/", p.exp_avg},
                                        {"exp_avg_sq/", p.exp_avg_sq}}) {
        auto it = tensors.find(prefix + p.name);
        if (it == tensors.end()) throw Error(path, "missing tensor '" + prefix + p.name + "'");
        if (it->second.scalar_type() != at::kFloat || it->second.sizes() != dst.sizes())
          throw Error(path, "tensor '" + prefix + p.name + "' has the wrong type or shape");
        copies.emplace_back(dst, it->second);
      }
    }
    c10::NoGradGuard no_grad;
    for (auto& [dst, src] : copies) dst.copy_(src);
    return step;
  } catch (const std::exception& e) {
    if (warning) *warning = std::string("ignored the distillation checkpoint: ") + e.what();
    return 0;
  }
}

}  // namespace lorq::lraqvit::detail
