#pragma once
// Accuracy against budget, measured: after an analysis, the compressed model is evaluated at several budgets and
// each point's measured metric (top-1/top-5 for classifiers; whatever the task's metric is) sits beside its
// predicted error and the float model's metric. Results are cached per series: one (analysis, constraints,
// evaluation set); a point within a series is keyed by its budget. A SweepCache round-trips through JSON, so the
// workbench keeps it in the .lorq session file and `lorq sweep --cache DIR` in DIR/sweeps.json. Torch-free: the
// workbench includes it. Implemented in core/src/session/sweep.cpp over the public CompressionSession.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "lorq/common/progress.h"
#include "lorq/session/api.h"

namespace lorq::api {

// Average bits as "START:STOP:STEP" (inclusive, e.g. "2:8:0.5"), a comma list ("3,4,6"), or one number. Throws
// lorq::Error naming the text on a bad list (non-numbers, step <= 0, start > stop, more than 1000 budgets).
std::vector<double> parse_avg_bits_list(const std::string& text);

// Every `step` bits from the first multiple of `step` above min_bits up to max_bits, both ends included: the
// workbench's default sweep between the smallest and the largest useful budget.
std::vector<double> default_sweep_bits(double min_bits, double max_bits, double step = 0.5);

struct SweepPoint {
  double requested_bits = 0;  // what was asked (before clamping into the reachable range); 0 for a byte budget
  int64_t budget_bytes = 0;   // the budget solved for (clamped)
  double avg_bits = 0;        // of budget_bytes over the compressible weights
  bool clamped = false;       // the request lay outside [smallest, largest useful] budget
  int64_t bytes = 0;          // the allocation's actual size
  double predicted_error = 0;
  std::vector<MetricValue> metrics;  // the compressed model's (empty without labels)
  int64_t images = 0;                // images scored
  bool rounded = false;              // the session's rounded model of this allocation was evaluated
  double seconds = 0;                // evaluation time
  bool cached = false;               // taken from the cache by this run (not saved)
};

// All points of one (analysis, constraints, evaluation set).
struct SweepSeries {
  std::string key;          // sweep_key(): what the results depend on
  std::string eval_images;  // for people reading the session file
  int64_t limit = 0;        // images per evaluation asked for (0: all); part of the key
  std::vector<MetricValue> float_metrics;
  int64_t images = 0, left_out = 0;
  int64_t min_bytes = 0, max_useful_bytes = 0;  // the reachable range the budgets were clamped into
  std::vector<SweepPoint> points;               // ascending budget, one per budget

  const SweepPoint* find(int64_t budget_bytes) const;
  void add(const SweepPoint& point);  // replaces a point of the same budget, keeps the order
};

// The identity of a series: the model, the analysis settings and calibration images, the constraints, the
// evaluation set (folder, labels, limit) and the images left out of it. Changing any of them gives another key, so
// stale results are never shown as current.
std::string sweep_key(const CompressionSession& session, const Constraints& constraints, const std::string& eval_images,
                      const std::string& eval_labels, int64_t limit);

class SweepCache {
 public:
  const SweepSeries* find(const std::string& key) const;
  // Adds the series' points (and float metrics) to the cached series of the same key, or adds the series.
  void merge(const SweepSeries& series);
  bool empty() const { return series_.empty(); }
  const std::vector<SweepSeries>& series() const { return series_; }
  std::string to_json() const;  // "" when empty
  // Throws lorq::Error naming `source` on malformed JSON.
  static SweepCache from_json(const std::string& text, const std::string& source);
  bool operator==(const SweepCache& o) const { return to_json() == o.to_json(); }

 private:
  std::vector<SweepSeries> series_;
};

struct SweepRequest {
  std::vector<double> avg_bits;       // budgets as average bits (clamped into the reachable range)
  std::vector<int64_t> budget_bytes;  // and/or as bytes
  std::string eval_images, eval_labels;
  int64_t limit = 0;  // images per evaluation (0: all)
};

// Evaluates the float model once and the compressed model at every requested budget (one evaluation per distinct
// allocation), skipping what `known` (a cached series of the same key, or null) already holds. Progress: stage
// "sweep", done/total in evaluated images over all evaluations, detail "point i/n B bits". `on_point` is called
// (on the calling thread) after each point, so a cancelled sweep keeps what it measured. Throws Cancelled,
// lorq::Error (no analysis, an evaluation set without labels, nothing left after the calibration images).
SweepSeries run_sweep(CompressionSession& session, const Constraints& constraints, const SweepRequest& request,
                      const SweepSeries* known, const JobControl& job,
                      const std::function<void(const SweepSeries&)>& on_point = {});

}  // namespace lorq::api
