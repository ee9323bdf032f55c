#pragma once
// What differs between tasks, in one object per task, so that the stages below the evaluator never assume "the
// output is logits [B, classes]":
//   - which outputs the global error compares, and with which weights (spec §6 defines one NSR; a task with several
//     outputs sums per-output NSRs with its weights, so boxes and class scores are not mixed at different scales);
//   - the evaluation metric (top-1/top-5 now; mAP and mIoU with their tasks);
//   - the per-image output change that ranks images in the Compare view.
// The label-free Hessian's random projections follow the error outputs (see sensitivity.cpp).
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/types.h"

namespace lorq {

// Accumulates a task's metric over batches of (outputs, labels).
class MetricAccumulator {
 public:
  virtual ~MetricAccumulator() = default;
  // One batch: the model's outputs for `batch` (its rows are set.items[batch.indices[i]], with their ground truth and
  // geometry). Images without ground truth are not counted.
  virtual void add(const ModelOutputs& outputs, const ImageSet& set, const ImageBatch& batch) = 0;
  virtual int64_t labeled() const = 0;
  virtual std::vector<MetricValue> values() const = 0;  // empty while nothing labeled was seen
};

// How far one image's compressed output moved from its float output.
struct OutputChange {
  double score = 0;            // the ranking key (classification: KL(p_float || p_compressed); detection: lost + new
                               // detections + (1 − IoU) of the matched ones; segmentation: changed pixel fraction)
  double max_prob_change = 0;  // classification: max_c |p_float(c) − p_compressed(c)|
  // Detection: float detections matched by a compressed one of the same class (IoU >= 0.5), lost and new ones, at
  // the task's default score threshold.
  int matched = 0, lost = 0, added = 0;
};

class Task {
 public:
  virtual ~Task() = default;
  virtual TaskKind kind() const = 0;
  // The outputs the global error compares, in order, with their weights (the first one is the reference scale of
  // the label-free Hessian estimate).
  virtual std::vector<std::pair<std::string, double>> error_outputs() const = 0;
  virtual std::unique_ptr<MetricAccumulator> new_metric() const = 0;
  // Both arguments hold one image (batch size 1).
  virtual OutputChange output_change(const ModelOutputs& float_row, const ModelOutputs& compressed_row) const = 0;
};

// The task object of a kind (a stateless singleton). Throws lorq::Error for a task that has none yet.
const Task& task_of(TaskKind kind);
inline const Task& task_of(const Model& model) { return task_of(model.task()); }

// The network-output error of spec §6 over batches: Σ_o w_o · Σ_b β_b·mean((y_o − ref_o)²) / Σ_b β_b·mean(ref_o²),
// β_b the batch's share of a full batch (the spec sums per-batch means over equal batches).
class OutputError {
 public:
  explicit OutputError(const Task& task);
  void add(const ModelOutputs& y, const ModelOutputs& ref, double batch_weight);
  double value() const;

 private:
  std::vector<std::pair<std::string, double>> outputs_;
  std::vector<double> noise_, signal_;
};

}  // namespace lorq
