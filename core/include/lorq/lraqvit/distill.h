#pragma once
// Recovery by distillation (LRA-QViT spec §3): the float model is the teacher, the RB-LRA model the student; the
// loss is α·task loss (task_loss.h: against the teacher's predictions, or labels where the images have them) +
// β·block-wise feature MSE (mean over the stages of the mean squared difference of each stage's output), AdamW on
// the branch deltas (weight decay pulls them towards the SVD solution) and optionally on the biases and norms.
//
// Deterministic: the batch of step t is a function of (seed, t) (a seeded permutation per pass over the images), so
// a run resumed from its checkpoint gives bit-identical deltas to an uninterrupted one.
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/lraqvit/rb_lra.h"
#include "lorq/models/model.h"

namespace lorq::lraqvit {

struct DistillSettings {
  // Defaults [G] sized for a 2-core CPU (the spec's GPU schedule is 5-10 epochs of ImageNet at batch 256).
  int steps = 100;                  // optimizer steps
  int batch = 8;                    // images per step
  double lr = 1e-4;                 // AdamW peak learning rate: 5% linear warm-up, then cosine decay to 0
  double weight_decay = 0.05;       // on the deltas (towards V′, U′); none on biases and norms
  double alpha = 1.0;               // task loss weight (spec: 1)
  double beta = 1.0;                // block feature MSE weight (spec: 1)
  bool train_biases_norms = false;  // also train every bias and LayerNorm affine of the student
  double max_grad_norm = 1.0;       // joint gradient clipping (0: off)
  uint64_t seed = 0;                // batch order
  int checkpoint_every = 10;        // steps between checkpoint writes (also written at the end and on cancel)
};

struct DistillStep {
  int step = 0, steps = 0;  // step is 1-based: the steps finished
  double loss = 0, task = 0, feature = 0, lr = 0;
};

struct DistillReport {
  int steps_run = 0;                 // in this call
  int resumed_from = 0;              // the checkpoint's step (0: a fresh start)
  std::vector<DistillStep> history;  // every step run in this call
  std::vector<std::string> warnings;
  double seconds = 0;
};

// Trains `layers`' deltas (in place) with the student `model` (the float model whose truncated layers `layers` holds;
// its overrides for those layers are set during the call and removed on return) against `teacher` (the float model,
// left unchanged) on `images` [N, C, H, W] (preprocessed). `labels`: int64 [N] (−1 unlabeled) or undefined.
// With train_biases_norms the student's own bias and norm tensors change in place.
// Checkpoint: when `checkpoint_path` is not empty, the state is written there every checkpoint_every steps, at the
// end and when cancelled; a matching checkpoint found there on entry is resumed (one written with other settings,
// images or layers is ignored with a warning). Progress: stage "distillation", done/total in steps.
// Cancel: Cancelled is thrown between steps, after the checkpoint is written.
DistillReport distill(Model& model, Model& teacher, std::vector<RbLraLayer>& layers, const at::Tensor& images,
                      const at::Tensor& labels, const DistillSettings& settings, const JobControl& job = {},
                      const std::string& checkpoint_path = "",
                      const std::function<void(const DistillStep&)>& on_step = {});

// The distillation loss of the student (its current deltas) on `images`, without gradients, in batches of `batch`.
DistillStep distillation_loss(Model& model, Model& teacher, const std::vector<RbLraLayer>& layers,
                              const at::Tensor& images, const at::Tensor& labels, const DistillSettings& settings,
                              int batch = 16);

}  // namespace lorq::lraqvit
