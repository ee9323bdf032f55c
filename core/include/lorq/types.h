#pragma once
// The plain types both sides of the engine need: the LibTorch engine (core/) and the front ends (the CLI, and the
// Qt workbench, which sees the engine only through torch-free headers). Defined once here; lorq/session/api.h
// re-exports them under lorq::api. No ATen, no Qt.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lorq {

// What a model computes; a model declares it, and a Task object (lorq/tasks/task.h) owns what differs between tasks.
enum class TaskKind {
  Classification,  // output "logits" [B, classes]
  Detection,       // outputs "logits" [B, queries, classes + 1] and "boxes" [B, queries, 4]
  Segmentation,    // output "logits" [B, classes, h, w]
};
const char* task_name(TaskKind kind);  // "classification", "detection", "segmentation"

// A compression option's kind: quantization Q(b), or low rank LR(b_A, b_B, r).
enum class OptionKind { Quant, LowRank };

// Allocation::choice value of a layer kept in float32 (excluded from compression; 4 bytes per weight, error 0).
constexpr int kKeepFloat = -1;

enum class Exclusion {
  None,
  Q8,     // kept at 8-bit per-row quantization
  Float,  // kept in float32
};

// What a user can impose on one layer (the workbench's pins and constraints, `--constraints FILE`).
struct LayerConstraint {
  int pinned_option = -1;  // index into the layer's options, or -1; a pin overrides min_bits and max_rank
  int min_bits = 0;        // Q(b) needs b >= min_bits; LR needs both factor bit widths >= min_bits
  int64_t max_rank = -1;   // LR options above this rank are not allowed (-1: no limit; 0: no low rank)
  Exclusion excluded = Exclusion::None;

  bool empty() const { return pinned_option < 0 && min_bits == 0 && max_rank < 0 && excluded == Exclusion::None; }
  bool operator==(const LayerConstraint& o) const {
    return pinned_option == o.pinned_option && min_bits == o.min_bits && max_rank == o.max_rank &&
           excluded == o.excluded;
  }
  bool operator!=(const LayerConstraint& o) const { return !(*this == o); }
};
using ConstraintMap = std::map<std::string, LayerConstraint>;  // by layer name; empty constraints are ignored

// Every constraint of one allocation: per-layer constraints and layer groups.
struct Constraints {
  ConstraintMap layers;  // layers not named are free
  // Layers that must take the same choice: the same option label (kind, bits, rank, factor bits), so only the
  // labels every member offers under its own constraints remain. Groups sharing a layer are merged.
  std::vector<std::vector<std::string>> groups;

  LayerConstraint& operator[](const std::string& layer) { return layers[layer]; }
  bool empty() const;  // no non-empty layer constraint and no group
  bool operator==(const Constraints& o) const { return layers == o.layers && groups == o.groups; }
  bool operator!=(const Constraints& o) const { return !(*this == o); }
};

// One exact allocation of a budget over the compressible layers (in the model's layer order).
struct Allocation {
  int64_t budget_bytes = 0;
  std::vector<int> choice;  // per layer: index into its options, or kKeepFloat
  int64_t bytes = 0;
  double predicted_error = 0;  // Σ of the chosen options' global errors
};

// A point of the optimal trade-off curve: the optimal error for every budget >= bytes (until the next point).
struct CurvePoint {
  int64_t bytes = 0;
  double error = 0;
};

// One class of a classifier's prediction.
struct Prediction {
  int class_index = 0;
  float probability = 0;
  std::string label;
};

// One object a detector found, in the original image's pixels (Hugging Face post_process_object_detection).
struct Detection {
  int class_index = 0;
  float score = 0;  // softmax probability of the class ("no object" left out of the max, not of the softmax)
  std::string label;
  float x0 = 0, y0 = 0, x1 = 0, y1 = 0;
};

// A segmenter's per-pixel classes at the original image's size (row-major; class indices below 256).
struct LabelMap {
  int width = 0, height = 0;
  std::vector<uint8_t> classes;
  bool empty() const { return classes.empty(); }
  uint8_t at(int x, int y) const { return classes[static_cast<size_t>(y) * width + x]; }
};

// What a model says about one image, by task: the top classes, the detections, or the label map.
struct ImagePrediction {
  TaskKind task = TaskKind::Classification;
  std::vector<Prediction> top;         // classification: the k most probable classes
  std::vector<Detection> detections;   // detection: those above the threshold, in token order
  LabelMap label_map;                  // segmentation
  int image_width = 0, image_height = 0;
};

// One figure of a task's evaluation metric ("top-1" 76.5 %, later "mAP@.5", "mIoU").
struct MetricValue {
  std::string name;
  double value = 0;  // in percent for accuracies
  bool percent = true;
};

// The budget of spec §2.5 counts compressed-layer weights only: B average bits = B/8 bytes per weight; a ratio is
// against their fp32 size. One formula for every front end (floored to whole bytes).
int64_t budget_bytes_for_avg_bits(double avg_bits, int64_t params);
int64_t budget_bytes_for_ratio(double ratio, int64_t params);

}  // namespace lorq
