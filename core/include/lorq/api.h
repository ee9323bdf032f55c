#pragma once
// The engine seen from the GUI: plain types only (no LibTorch, no Qt), so UI translation units stay light and free
// of the Qt/LibTorch keyword clash. Implemented in core/src/api.cpp on top of the LibTorch engine.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "lorq/progress.h"

namespace lorq::api {

struct LayerRow {
  std::string name;
  int64_t out_features = 0, in_features = 0;
  int64_t params = 0;
  double fp32_mb = 0;
  bool low_rank_allowed = true;
  int stage = 0;
};

struct ModelSummary {
  std::string path, architecture;
  int depth = 0, embed_dim = 0, num_heads = 0, num_classes = 0, image_size = 0;
  int64_t total_params = 0, compressible_params = 0;
  std::vector<LayerRow> layers;
};

struct ClassScore {
  int class_index = 0;
  float probability = 0;
  std::string label;
};

struct EvalSummary {
  int64_t images = 0, labeled = 0;
  double top1_pct = 0, top5_pct = 0, images_per_s = 0, seconds = 0;
  std::vector<std::string> failed;
};

// One loaded model. Thread-compatible: call from one thread at a time (the GUI's worker).
class ModelHandle {
 public:
  static std::shared_ptr<ModelHandle> open(const std::string& path);  // throws lorq::Error
  ~ModelHandle();
  const ModelSummary& summary() const;
  std::vector<ClassScore> predict(const std::string& image_path, int k) const;
  EvalSummary evaluate(const std::string& images, const std::string& labels, int64_t limit,
                       const JobControl& job) const;

 private:
  struct Impl;
  explicit ModelHandle(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The embedded demo shipped in datasets/: its model folder and image set ("" when not found).
struct DemoPaths {
  std::string model_dir, images_dir, labels_csv;
};
DemoPaths find_demo();
// Sets LibTorch's threads to the core count (call once at start-up).
void init_engine();

}  // namespace lorq::api
