#include "lorq/lraqvit/task_loss.h"

#include <ATen/ATen.h>

#include "lorq/common/error.h"
#include "lorq/tasks/task.h"

namespace lorq::lraqvit {

namespace {
// Mean entropy of probability targets along `dim` (a constant: subtracting it makes the soft cross-entropy a KL
// divergence, 0 when the student matches the teacher).
at::Tensor target_entropy(const at::Tensor& p, int64_t dim) {
  return -(p * at::log(p.clamp_min(1e-30))).sum(dim).mean();
}
}  // namespace

at::Tensor distillation_task_loss(TaskKind task, const ModelOutputs& student, const ModelOutputs& teacher,
                                  const at::Tensor& labels) {
  if (task == TaskKind::Classification) {
    const at::Tensor s = student.logits();
    at::Tensor target = at::softmax(teacher.logits().detach(), -1);
    if (labels.defined()) {
      if (labels.numel() != target.size(0))
        throw Error("distillation: " + std::to_string(labels.numel()) + " labels for a batch of " +
                    std::to_string(target.size(0)) + " images");
      const at::Tensor labeled = (labels >= 0).unsqueeze(-1);
      const at::Tensor one_hot = at::one_hot(labels.clamp_min(0).to(at::kLong), target.size(-1)).to(at::kFloat);
      target = at::where(labeled, one_hot, target);
    }
    return at::cross_entropy_loss(s, target) - target_entropy(target, -1);
  }
  if (task == TaskKind::Segmentation) {
    const at::Tensor target = at::softmax(teacher.logits().detach(), 1);  // [B, K, h, w]
    return at::cross_entropy_loss(student.logits(), target) - target_entropy(target, 1);
  }
  at::Tensor total;
  for (const auto& [name, weight] : task_of(task).error_outputs()) {
    const at::Tensor t = teacher.at(name).detach();
    const at::Tensor term = (student.at(name) - t).pow(2).mean() / t.pow(2).mean().clamp_min(1e-12) * weight;
    total = total.defined() ? total + term : term;
  }
  return total;
}

}  // namespace lorq::lraqvit
