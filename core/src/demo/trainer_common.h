#pragma once
// Pieces the scene trainers (detector_trainer.cpp, segmenter_trainer.cpp) share. Private to core/src/demo.
#include <ATen/core/Tensor.h>
#include <torch/optim/adamw.h>

#include <memory>
#include <opencv2/core.hpp>
#include <string>
#include <utility>
#include <vector>

#include "lorq/models/preprocessing.h"

namespace lorq::demo_training {

// A generated BGR image as the model's input: RGB, resized to the model's input size with the HF processors'
// integer resize (a no-op for scenes generated at that size, which training and the held-out evaluation use), then
// normalised as the processors do.
at::Tensor scene_input(const cv::Mat& bgr, const Preprocessing& pp);

// Scales all gradients together so that their joint L2 norm is at most max_norm (torch's clip_grad_norm_).
void clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

// Linear warm-up over the first 5% of the steps, then cosine decay to 0.
double warmup_cosine_lr(int64_t step, int64_t steps, double base_lr);

// AdamW over named tensors (made trainable): weight decay on matrices and kernels, none on biases, norms and the
// tensors `no_decay` names. Returns the optimizer and every parameter (for clipping).
struct Optimizer {
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::vector<at::Tensor> params;
};
Optimizer make_adamw(const std::vector<std::pair<std::string, at::Tensor>>& named, double lr, double weight_decay,
                     bool (*no_decay)(const std::string& key));
void set_lr(torch::optim::AdamW& opt, double lr);

// The optimizer state beside a checkpoint (written to a temporary name, then renamed).
void save_optimizer(torch::optim::AdamW& opt, const std::string& path);
void load_optimizer(torch::optim::AdamW& opt, const std::string& path);

}  // namespace lorq::demo_training
