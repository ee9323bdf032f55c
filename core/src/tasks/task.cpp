#include "lorq/tasks/task.h"

#include <ATen/ATen.h>

#include "lorq/common/error.h"
#include "lorq/tasks/classification.h"
#include "lorq/tasks/detection.h"
#include "lorq/tasks/segmentation.h"

namespace lorq {

const Task& task_of(TaskKind kind) {
  static const ClassificationTask classification;
  static const DetectionTask detection;
  static const SegmentationTask segmentation;
  switch (kind) {
    case TaskKind::Classification:
      return classification;
    case TaskKind::Detection:
      return detection;
    case TaskKind::Segmentation:
      return segmentation;
  }
  throw Error(std::string("no ") + task_name(kind) + " task in this build");
}

OutputError::OutputError(const Task& task)
    : outputs_(task.error_outputs()), noise_(outputs_.size(), 0.0), signal_(outputs_.size(), 0.0) {}

void OutputError::add(const ModelOutputs& y, const ModelOutputs& ref, double w) {
  for (size_t i = 0; i < outputs_.size(); ++i) {
    const at::Tensor& a = y.at(outputs_[i].first);
    const at::Tensor& r = ref.at(outputs_[i].first);
    noise_[i] += w * (a - r).pow(2).mean().item<double>();
    signal_[i] += w * r.pow(2).mean().item<double>();
  }
}

double OutputError::value() const {
  double e = 0;
  for (size_t i = 0; i < outputs_.size(); ++i)
    if (signal_[i] > 0) e += outputs_[i].second * (noise_[i] / signal_[i]);
  return e;
}

}  // namespace lorq
