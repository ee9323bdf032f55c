#pragma once
// The recovery step's task loss (LRA-QViT spec §3: α·L_CE against labels), taken from the model's task so that the
// same recovery runs on classifiers, detectors and segmenters:
//   classification: cross-entropy of the student's logits against the label, or against the teacher's predicted
//                   class probabilities where the image has no label [G: soft targets, whose minimum is the
//                   teacher's function; hard top-1 targets make the student more confident than the teacher and
//                   pull its block features away from the teacher's, measured on the demo];
//   segmentation:   per-pixel cross-entropy against the teacher's per-pixel class probabilities (label maps unused);
//   (soft targets' entropy is subtracted, so these are KL divergences: 0 when the student matches the teacher;
//   the gradient is the cross-entropy's);
//   detection:      the task's weighted output error (lorq/tasks/task.h error_outputs) between student and teacher,
//                   each output's mean squared difference over the teacher's mean square [G: no matching-based
//                   detection loss against teacher predictions].
#include <ATen/core/Tensor.h>

#include "lorq/models/model.h"
#include "lorq/types.h"

namespace lorq::lraqvit {

// labels: int64 [B] class indices, −1 for unlabeled images, or undefined (classification only; else ignored).
at::Tensor distillation_task_loss(TaskKind task, const ModelOutputs& student, const ModelOutputs& teacher,
                                  const at::Tensor& labels);

}  // namespace lorq::lraqvit
