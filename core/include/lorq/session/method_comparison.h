#pragma once
// Several compression methods at one weight budget and on the same calibration images, in one table: uniform
// per-row quantization, MLoRQ (nearest rounding), MLoRQ with adaptive rounding, LRA-QViT, and MLoRQ with the
// LRA-QViT building blocks. The one engine of `lorq compare-methods` and of the workbench's Methods view: both fill
// MethodComparisonSettings, call run_method_comparison and show its rows; a MethodComparison round-trips through JSON
// so the workbench keeps it in the .lorq session file. Torch-free: the workbench includes it. Implemented in
// core/src/session/method_comparison.cpp.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/session/api.h"

namespace lorq::api {

enum class MethodKind { Uniform, MlorqNearest, MlorqRounded, LraQvit, MlorqLraQvitBlocks };

// Every method, in the table's order.
std::vector<MethodKind> all_methods();
// The JSON and command-line name: "uniform", "mlorq", "mlorq-rounded", "lraqvit", "mlorq-blocks".
std::string method_kind_name(MethodKind kind);
// Throws lorq::Error naming the text and the known names.
MethodKind parse_method_kind(const std::string& name);

struct MethodComparisonSettings {
  // The model and the calibration images every method calibrates on (the session's analysis settings choose them).
  std::string model_path, calib_images, calib_labels, cache_dir;
  AnalysisSettings analysis;
  // Where every method is evaluated (the images any method calibrated or rounded on are left out).
  std::string eval_images, eval_labels;
  int64_t limit = 0;  // images per evaluation (0: all)
  // The weight budget: bytes when > 0, else average bits over the compressible weights (spec §2.5).
  int64_t budget_bytes = 0;
  double avg_bits = 0;
  int act_bits = 0;                    // 0: weights only; 4, 6 or 8 (MLoRQ: static per tensor; LRA-QViT: per token)
  std::vector<MethodKind> methods;     // empty: all_methods()
  std::string mlorq_constraints_json;  // the MLoRQ rows' constraints (schema of `--constraints FILE`), "" for none
  std::string mlorq_constraints_source = "the MLoRQ constraints";  // what their errors name (the file)
  int round_iterations = 500;                                      // adaptive rounding's optimizer steps per block
  int lraqvit_steps = -1;       // LRA-QViT distillation steps (-1: its default, lorq/lraqvit/distill.h)
  int lraqvit_wads_steps = -1;  // LRA-QViT WADS steps per point (-1: its default, lorq/lraqvit/wads.h)
};

// One layer of a method's result, as the Allocation view draws it.
struct MethodLayerChoice {
  std::string layer;
  bool kept_float = false;
  OptionRow option;  // label, kind, bits (Quant), bits_a/bits_b and rank (LowRank), bytes; errors unused
};

struct MethodRow {
  MethodKind kind = MethodKind::Uniform;
  std::string method;  // the table's name ("uniform Q3 per row", "LRA-QViT W4A8")
  bool ran = false;    // false: could not run at this budget, or not available (the note says why)
  int64_t bytes = 0;
  double avg_bits = 0;
  std::vector<MetricValue> metrics;  // compressed, on the evaluation images
  int64_t images = 0;
  double seconds = 0;  // the method's own time (MLoRQ's includes its analysis)
  std::string note;
  std::vector<MethodLayerChoice> layers;  // in network order (every compressed linear layer the method produced)
};

struct MethodComparison {
  std::string model_path, eval_images;
  int64_t budget_bytes = 0, compressible_params = 0;
  int act_bits = 0, calibration_images = 0;
  std::vector<MetricValue> float_metrics;
  int64_t float_images = 0;
  std::vector<MethodRow> rows;  // in the order they finished
  bool complete = false;        // false: cancelled or failed after the rows it has

  double budget_avg_bits() const;
  // The table `lorq compare-methods` prints (header line, float row, one line per method, a note when the rows
  // were scored on different image counts).
  std::string table_text() const;
  std::string to_json() const;  // "" when there is no result (no rows and no float metrics)
  // Throws lorq::Error naming `source` on malformed JSON. "" gives an empty comparison.
  static MethodComparison from_json(const std::string& text, const std::string& source);
  bool empty() const { return rows.empty() && float_metrics.empty(); }
};

// Opens a session on the model and calibration images, analyzes it (from the cache when there), evaluates the float
// model and then each method at the budget, calling `on_row` (on the calling thread) with the comparison so far
// after the float evaluation and after every method, so a cancelled run keeps its finished rows. Progress: the
// stages of each method, and stage "methods" (done/total in methods, detail "method i/n NAME") between them. Throws
// Cancelled, lorq::Error (bad paths, a budget below every MLoRQ allocation is a row's note, not an error).
MethodComparison run_method_comparison(const MethodComparisonSettings& settings, const JobControl& job,
                                       const std::function<void(const MethodComparison&)>& on_row = {});

}  // namespace lorq::api
