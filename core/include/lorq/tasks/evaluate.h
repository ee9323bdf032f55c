#pragma once
// Running a model over an image set: top-1/top-5 on labeled sets, per-image logits when asked.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/common/progress.h"

namespace lorq {

struct EvalOptions {
  int batch = 32;
  int64_t limit = 0;          // 0: every image
  bool keep_logits = false;   // keep [N, classes] logits of the decoded images
  int decode_threads = 1;     // decoding runs beside the forward pass of the previous batch
};

struct EvalResult {
  int64_t images = 0;   // decoded and run
  int64_t labeled = 0;  // of those, with a label
  int64_t top1 = 0, top5 = 0;
  double seconds = 0;
  std::vector<std::string> failed;  // "path: problem"
  at::Tensor logits;                // [images, classes] when keep_logits
  std::vector<size_t> indices;      // set positions of the logits' rows
  double top1_pct() const { return labeled ? 100.0 * top1 / labeled : 0.0; }
  double top5_pct() const { return labeled ? 100.0 * top5 / labeled : 0.0; }
  double images_per_s() const { return seconds > 0 ? images / seconds : 0.0; }
};

// Throws lorq::Error when no image of the set can be decoded, Cancelled when the job is cancelled.
EvalResult evaluate(Model& model, const ImageSet& set, const EvalOptions& options, const JobControl& job = {});

struct Prediction {
  int class_index = 0;
  float probability = 0;
  std::string label;
};
std::vector<Prediction> top_k(const at::Tensor& logits_row, int k, const ModelConfig& config);

// Thread set-up for the engine (see parallel_ops.h): front ends call it once at start-up.
void init_threads();

}  // namespace lorq
