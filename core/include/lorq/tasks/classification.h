#pragma once
// Image classification: one output "logits" [B, classes]; top-1/top-5 accuracy; images ranked by the KL divergence
// of the compressed softmax from the float one.
#include <ATen/core/Tensor.h>

#include "lorq/tasks/task.h"

namespace lorq {

class ClassificationTask : public Task {
 public:
  TaskKind kind() const override { return TaskKind::Classification; }
  std::vector<std::pair<std::string, double>> error_outputs() const override { return {{"logits", 1.0}}; }
  std::unique_ptr<MetricAccumulator> new_metric() const override;
  OutputChange output_change(const ModelOutputs& float_row, const ModelOutputs& compressed_row) const override;
};

// The k most probable classes of one logits row, with the model's label names.
std::vector<Prediction> top_k(const at::Tensor& logits_row, int k, const Model& model);

}  // namespace lorq
