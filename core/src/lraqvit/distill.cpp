#include "lorq/lraqvit/distill.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "../demo/trainer_common.h"
#include "distill_state.h"
#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/lraqvit/task_loss.h"

namespace lorq::lraqvit {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Pass {
  ModelOutputs outputs;
  std::vector<StageState> features;  // every stage's output
};

Pass run_with_features(Model& model, const at::Tensor& images) {
  Pass p;
  StageState x = model.embed(images);
  for (int s = 0; s < model.num_stages(); ++s) {
    x = model.run_stage(s, x);
    p.features.push_back(x);
  }
  p.outputs = model.finish(x);
  return p;
}

// Mean over the stages of the mean squared difference of their outputs (every tensor of a stage's state).
at::Tensor feature_mse(const Pass& student, const Pass& teacher) {
  at::Tensor total;
  int64_t terms = 0;
  for (size_t s = 0; s < student.features.size(); ++s) {
    at::Tensor stage;
    int64_t tensors = 0;
    for (size_t k = 0; k < student.features[s].size(); ++k) {
      // A stage's state may carry integer bookkeeping (YOLOS: the patch grid), which is no feature.
      if (!at::isFloatingType(student.features[s][k].scalar_type())) continue;
      const at::Tensor d = at::mse_loss(student.features[s][k], teacher.features[s][k].detach());
      stage = stage.defined() ? stage + d : d;
      ++tensors;
    }
    if (!tensors) continue;
    stage = stage / double(tensors);
    total = total.defined() ? total + stage : stage;
    ++terms;
  }
  return terms ? total / double(terms) : at::zeros({});
}

struct Losses {
  at::Tensor total, task, feature;
};

Losses batch_loss(Model& model, Model& teacher, const at::Tensor& images, const at::Tensor& labels,
                  const DistillSettings& s) {
  Pass t;
  {
    c10::NoGradGuard no_grad;
    t = run_with_features(teacher, images);
  }
  const Pass st = run_with_features(model, images);
  Losses l;
  l.task = distillation_task_loss(model.task(), st.outputs, t.outputs, labels);
  l.feature = feature_mse(st, t);
  l.total = l.task * s.alpha + l.feature * s.beta;
  return l;
}

// The images of step t: positions t·B .. t·B+B−1 of the endless sequence of seeded permutations of 0..N−1.
at::Tensor batch_indices(int64_t N, int batch, int64_t step, uint64_t seed) {
  std::vector<int64_t> idx;
  int64_t epoch = -1;
  at::Tensor perm;
  for (int64_t j = 0; j < batch; ++j) {
    const int64_t i = step * batch + j;
    if (i / N != epoch) {
      epoch = i / N;
      at::Generator g = at::detail::createCPUGenerator(seed * 1000003ULL + static_cast<uint64_t>(epoch));
      perm = at::randperm(N, g, at::kLong);
    }
    idx.push_back(perm[i % N].item<int64_t>());
  }
  return at::tensor(idx, at::kLong);
}

bool is_bias_or_norm(const std::string& key) {
  return (key.size() > 5 && key.compare(key.size() - 5, 5, ".bias") == 0) || key.find("norm") != std::string::npos;
}

std::string tensor_hash(const at::Tensor& t) {
  if (!t.defined()) return "-";
  const at::Tensor c = t.detach().contiguous().cpu();
  return fnv1a64_hex(c.data_ptr(), c.numel() * c.element_size());
}

// Everything that determines the trained values except the trained values themselves (a cancelled run changed
// them in place; resuming restores them from the file).
std::string checkpoint_key(const Model& teacher, const std::vector<RbLraLayer>& layers, const at::Tensor& images,
                           const at::Tensor& labels, const DistillSettings& s) {
  nlohmann::json key;
  key["version"] = 1;
  std::string h;
  for (const auto& [name, t] : teacher.named_tensors()) h += name + tensor_hash(t);
  key["teacher"] = fnv1a64_hex(h.data(), h.size());
  key["images"] = tensor_hash(images);
  key["labels"] = tensor_hash(labels);
  nlohmann::json ls = nlohmann::json::array();
  for (const auto& l : layers) ls.push_back({l.name, l.rank, tensor_hash(l.base_out), tensor_hash(l.base_in)});
  key["layers"] = ls;
  key["settings"] = {s.steps,         s.batch, s.lr, s.weight_decay, s.alpha, s.beta, s.train_biases_norms,
                     s.max_grad_norm, s.seed};
  const std::string text = key.dump();
  return fnv1a64_hex(text.data(), text.size());
}

void check_inputs(const Model& model, const std::vector<RbLraLayer>& layers, const at::Tensor& images,
                  const at::Tensor& labels, const DistillSettings& s) {
  if (images.dim() != 4 || images.size(0) == 0) throw Error("distillation: expected [N, C, H, W] images");
  if (labels.defined() && labels.numel() != images.size(0))
    throw Error("distillation: " + std::to_string(labels.numel()) + " labels for " + std::to_string(images.size(0)) +
                " images");
  if (s.steps < 1 || s.batch < 1 || !(s.lr > 0) || s.weight_decay < 0 || s.checkpoint_every < 1)
    throw Error("distillation: steps, batch, checkpoint_every must be at least 1, lr > 0 and weight decay >= 0");
  // Without branches only the biases and norms can train (MLoRQ's recovery block, pipeline/lraqvit_blocks.h).
  if (layers.empty() && !s.train_biases_norms) throw Error("distillation: no RB-LRA layers to train");
  for (const auto& l : layers) (void)model.layer(l.name);  // throws for a layer the model does not have
}

}  // namespace

DistillReport distill(Model& model, Model& teacher, std::vector<RbLraLayer>& layers, const at::Tensor& images,
                      const at::Tensor& labels, const DistillSettings& s, const JobControl& job,
                      const std::string& checkpoint_path, const std::function<void(const DistillStep&)>& on_step) {
  const auto start = std::chrono::steady_clock::now();
  check_inputs(model, layers, images, labels, s);
  DistillReport report;

  std::vector<std::pair<std::string, at::Tensor>> trainable = named_deltas(layers);
  std::vector<bool> decay(trainable.size(), true);
  if (s.train_biases_norms) {
    for (const auto& [key, t] : model.named_tensors()) {
      if (!is_bias_or_norm(key)) continue;
      trainable.emplace_back("model/" + key, t);
      decay.push_back(false);
    }
  }
  detail::AdamW opt(trainable, decay);
  std::vector<at::Tensor> params;
  for (auto& p : opt.params()) params.push_back(p.param);

  const std::string key = checkpoint_key(teacher, layers, images, labels, s);
  std::string warning;
  report.resumed_from = detail::load_distill_checkpoint(checkpoint_path, key, opt, &warning);
  if (!warning.empty()) report.warnings.push_back(warning);

  // Trainable on entry, frozen again and the overrides gone on every exit.
  struct Restore {
    Model& model;
    const std::vector<RbLraLayer>& layers;
    std::vector<at::Tensor>& params;
    ~Restore() {
      remove_overrides(model, layers);
      for (at::Tensor& p : params) {
        p.mutable_grad() = at::Tensor();
        p.requires_grad_(false);
      }
    }
  } restore{model, layers, params};
  for (at::Tensor& p : params) p.requires_grad_(true);
  install_branches(model, layers, BranchForm::Training);

  const auto save = [&](int step) {
    if (!checkpoint_path.empty()) detail::save_distill_checkpoint(checkpoint_path, key, step, opt);
  };
  BlasThreadsScope blas_threads;  // autograd GEMMs: give OpenBLAS the threads (see parallel_ops.h)
  c10::AutoGradMode grad(true);
  const int64_t N = images.size(0);
  for (int step = report.resumed_from; step < s.steps; ++step) {
    if (job.cancelled()) {
      save(step);
      throw Cancelled();
    }
    const at::Tensor idx = batch_indices(N, s.batch, step, s.seed);
    const at::Tensor x = images.index_select(0, idx);
    const at::Tensor y = labels.defined() ? labels.index_select(0, idx) : at::Tensor();
    const double lr = demo_training::warmup_cosine_lr(step, s.steps, s.lr);
    const Losses l = batch_loss(model, teacher, x, y, s);
    if (!std::isfinite(l.total.item<double>()))
      throw Error("distillation: the loss is not finite at step " + std::to_string(step + 1) + " (lower the lr)");
    l.total.backward();
    if (s.max_grad_norm > 0) demo_training::clip_grad_norm(params, s.max_grad_norm);
    opt.step(step + 1, lr, s.weight_decay);

    DistillStep rec{step + 1, s.steps, l.total.item<double>(), l.task.item<double>(), l.feature.item<double>(), lr};
    report.history.push_back(rec);
    ++report.steps_run;
    if ((step + 1) % s.checkpoint_every == 0 || step + 1 == s.steps) save(step + 1);
    char detail[160];
    std::snprintf(detail, sizeof detail, "step %d/%d loss %.4g (task %.4g, features %.4g) lr %.2g", step + 1, s.steps,
                  rec.loss, rec.task, rec.feature, lr);
    job.report({"distillation", step + 1, s.steps, seconds_since(start), detail});
    if (on_step) on_step(rec);
  }
  report.seconds = seconds_since(start);
  return report;
}

DistillStep distillation_loss(Model& model, Model& teacher, const std::vector<RbLraLayer>& layers,
                              const at::Tensor& images, const at::Tensor& labels, const DistillSettings& s, int batch) {
  c10::NoGradGuard no_grad;
  install_branches(model, layers, BranchForm::Training);
  DistillStep out;
  const int64_t N = images.size(0);
  try {
    for (int64_t b0 = 0; b0 < N; b0 += batch) {
      const int64_t b1 = std::min<int64_t>(N, b0 + batch);
      const at::Tensor y = labels.defined() ? labels.slice(0, b0, b1) : at::Tensor();
      const Losses l = batch_loss(model, teacher, images.slice(0, b0, b1), y, s);
      const double w = double(b1 - b0) / double(N);
      out.loss += w * l.total.item<double>();
      out.task += w * l.task.item<double>();
      out.feature += w * l.feature.item<double>();
    }
  } catch (...) {
    remove_overrides(model, layers);
    throw;
  }
  remove_overrides(model, layers);
  return out;
}

}  // namespace lorq::lraqvit
