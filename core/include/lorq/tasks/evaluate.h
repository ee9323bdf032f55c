#pragma once
// Running a model over an image set: the task's metric on labeled sets (top-1/top-5 for classifiers), per-image
// outputs when asked.
#include <ATen/core/Tensor.h>

#include <array>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/tasks/classification.h"
#include "lorq/types.h"

namespace lorq {

struct EvalOptions {
  int batch = 32;
  int64_t limit = 0;          // 0: every image
  bool keep_outputs = false;  // keep the outputs of the decoded images
  int decode_threads = 1;     // decoding runs beside the forward pass of the previous batch
};

struct EvalResult {
  int64_t images = 0;   // decoded and run
  int64_t labeled = 0;  // of those, with a label
  std::vector<MetricValue> metrics;  // the task's metric (empty without labels)
  double seconds = 0;
  std::vector<std::string> failed;  // "path: problem"
  ModelOutputs outputs;             // every output, [images, ...], when keep_outputs
  std::vector<size_t> indices;      // set positions of the outputs' rows
  std::vector<ImageGeometry> geometry;  // of the outputs' rows
  std::vector<std::array<int64_t, 2>> input_sizes;  // the (padded) input height and width of each row's batch

  // A metric by name ("top-1"), or 0 when the task has none of that name or nothing was labeled.
  double metric(const std::string& name) const;
  double top1_pct() const { return metric("top-1"); }
  double top5_pct() const { return metric("top-5"); }
  double images_per_s() const { return seconds > 0 ? images / seconds : 0.0; }
};

// Throws lorq::Error when no image of the set can be decoded, Cancelled when the job is cancelled.
EvalResult evaluate(Model& model, const ImageSet& set, const EvalOptions& options, const JobControl& job = {});

// Thread set-up for the engine (see parallel_ops.h): front ends call it once at start-up.
void init_threads();

}  // namespace lorq
