#pragma once
// The engine seen from the GUI: plain types only (no LibTorch, no Qt), so UI translation units stay light and free
// of the Qt/LibTorch keyword clash. Implemented in core/src/api.cpp on top of the LibTorch engine.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lorq/common/progress.h"

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

// ---- The compression session: analysis, allocation, evaluation and export of one model (the workbench's engine).

// The analysis settings a front end exposes (a subset of lorq::CompressSettings; the rest keep their defaults).
struct AnalysisSettings {
  int calibration_images = 32;  // images for the float reference and the global error
  int lfh_images = 8;           // of those, for the label-free Hessian
  int projections = 32;         // LFH random projections per image
  int anchors = 3;              // measured ranks per factor-bit pair
  bool estimate = false;        // global errors from the LFH instead of re-running the network
  uint64_t seed = 0;
  // The settings of the demo tests: a whole analysis of the demo in seconds.
  static AnalysisSettings fast() { return {16, 4, 16, 3, false, 0}; }
};

enum class OptionKind { Quant, LowRank };

struct OptionRow {
  std::string label;  // "Q4", "LR r=37 A6/B4"
  OptionKind kind = OptionKind::Quant;
  int bits = 0;                // Q(b)
  int bits_a = 0, bits_b = 0;  // LR factor bits
  int64_t rank = 0;            // LR rank
  int64_t bytes = 0;
  double error = 0;       // predicted global error (output NSR)
  double local_loss = 0;  // Λ
  bool measured = false;  // error measured (anchor) rather than interpolated
  bool on_front = false;  // on the layer's (bytes, error) Pareto front
};

struct LayerAnalysis {
  std::string name;
  int64_t out_features = 0, in_features = 0, params = 0;
  int stage = 0;  // block index (-1: the embedding)
  bool low_rank_allowed = true;
  int64_t full_rank = 0;  // min(out, in)
  std::vector<OptionRow> options;
};

// Allocation::choice value of a layer kept in float32.
constexpr int kKeepFloat = -1;

enum class Exclusion { None, Q8, Float };

// A user's pin or constraint on one layer (see lorq::LayerConstraint).
struct LayerConstraint {
  int pinned_option = -1;  // option index; overrides min_bits / max_rank
  int min_bits = 0;
  int64_t max_rank = -1;  // -1: no limit; 0: no low rank
  Exclusion excluded = Exclusion::None;
  bool empty() const { return pinned_option < 0 && min_bits == 0 && max_rank < 0 && excluded == Exclusion::None; }
  bool operator==(const LayerConstraint& o) const {
    return pinned_option == o.pinned_option && min_bits == o.min_bits && max_rank == o.max_rank &&
           excluded == o.excluded;
  }
  bool operator!=(const LayerConstraint& o) const { return !(*this == o); }
};
using ConstraintMap = std::map<std::string, LayerConstraint>;  // by layer name; empty constraints are ignored
// Layers that must take the same choice (the same option label), as lorq::Constraints::groups.
using LayerGroups = std::vector<std::vector<std::string>>;

struct AllocationResult {
  int64_t budget_bytes = 0, bytes = 0;
  double predicted_error = 0;
  std::vector<int> choice;  // per layer: option index or kKeepFloat
};

struct TradeoffPoint {
  int64_t bytes = 0;
  double error = 0;
};

// The exact allocator of one (analysis, constraints). Immutable; every method is safe from any thread, so the UI
// thread solves on every slider movement while a worker runs.
class Allocator {
 public:
  ~Allocator();
  int64_t min_bytes() const;
  int64_t max_bytes() const;
  AllocationResult solve(int64_t budget_bytes) const;        // clamps the budget into [min_bytes, max_bytes]
  const std::vector<TradeoffPoint>& tradeoff_curve() const;  // computed on first call (can take 0.1-0.5 s)

 private:
  friend class CompressionSession;
  struct Impl;
  explicit Allocator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

struct ImageSetInfo {
  std::string source;
  int64_t images = 0, labeled = 0;
  std::vector<std::string> files;    // in the set's order
  std::vector<std::string> skipped;  // non-image files
};

// One evaluated image of a comparison: both models' top-k and how much the output moved.
struct ImageComparison {
  std::string path;
  int label = -1;
  std::vector<ClassScore> float_top, compressed_top;
  double kl = 0;               // KL(p_float || p_compressed) of the softmax outputs
  double max_prob_change = 0;  // max_c |p_float(c) - p_compressed(c)|
};

struct ComparisonResult {
  EvalSummary float_eval, compressed_eval;
  std::vector<ImageComparison> images;  // sorted by kl, largest first
};

// Adaptive rounding of one allocation (spec §10), optionally with activation quantization (spec §8).
struct RoundingOptions {
  int iterations = 500;     // optimizer steps per layer (the CPU default; the spec uses 20000)
  int images = 128;         // calibration images first, then more of the calibration set
  int activation_bits = 0;  // 0: weights only; 4, 6 or 8: activations quantized too
};
struct RoundingSummary {
  int layers = 0;
  double nearest_error = 0, learned_error = 0;  // summed layer reconstruction errors
  double seconds = 0;
  std::vector<std::string> warnings;
};

// What a session file holds (JSON): reopening it with the same engine cache folder is instant.
struct SessionFile {
  std::string model_path, images, labels, eval_images, eval_labels, cache_dir;
  AnalysisSettings settings;
  int64_t budget_bytes = 0;
  ConstraintMap constraints;
  LayerGroups groups;
};
void save_session_file(const std::string& path, const SessionFile& session);  // atomic; throws lorq::Error
SessionFile load_session_file(const std::string& path);                       // throws lorq::Error naming the file

// Thread-compatible: one thread at a time (the GUI's worker), except make_allocator() and the returned Allocator,
// which only read the finished analysis.
class CompressionSession {
 public:
  // Loads the model and opens the calibration image set (throws lorq::Error naming the path and the problem).
  // `cache_dir` empty: no engine cache.
  static std::shared_ptr<CompressionSession> open(const std::string& model_path, const std::string& images,
                                                  const std::string& labels, const AnalysisSettings& settings,
                                                  const std::string& cache_dir);
  ~CompressionSession();

  const ModelSummary& model() const;
  const ImageSetInfo& calibration_set() const;
  const AnalysisSettings& settings() const;
  const std::string& cache_dir() const;

  // Every stage (calibration, sensitivity, candidates, global error), each reporting Progress; loads completed
  // stages from the cache. Throws Cancelled or lorq::Error.
  void analyze(const JobControl& job);
  bool analyzed() const;
  // Whether the cache already holds the complete analysis (analyze() would then only load it).
  bool has_cached_analysis() const;
  const std::vector<LayerAnalysis>& layers() const;  // empty until analyzed
  int64_t compressible_params() const;
  const std::vector<std::string>& warnings() const;
  std::vector<std::pair<std::string, double>> stage_seconds() const;
  const std::vector<std::string>& calibration_files() const;

  // Throws lorq::Error on an impossible constraint (unknown layer, pin on an excluded layer, nothing allowed).
  std::shared_ptr<const Allocator> make_allocator(const ConstraintMap& constraints) const;
  std::shared_ptr<const Allocator> make_allocator(const ConstraintMap& constraints, const LayerGroups& groups) const;
  // The constraints JSON of `lorq compress --constraints` (lorq/alloc/constraints_io.h: pins by option label).
  std::string constraints_to_json(const ConstraintMap& constraints, const LayerGroups& groups) const;
  // Throws lorq::Error naming `source` and the problem (bad JSON, unknown layer or option label).
  void constraints_from_json(const std::string& text, const std::string& source, ConstraintMap* constraints,
                             LayerGroups* groups) const;

  // The model with `allocation` applied is built on first use and kept until another allocation is asked for.
  std::vector<ClassScore> predict(const std::string& image_path, int k, const AllocationResult* compressed);
  // Both models on an image set (the calibration images left out), per-image output change. Throws Cancelled.
  ComparisonResult compare(const std::string& images, const std::string& labels, int64_t limit, int k,
                           const AllocationResult& allocation, const JobControl& job);
  // The engine's export folder (lorq-config.json, compressed.safetensors, config.json).
  void export_to(const std::string& out_dir, const AllocationResult& allocation);

  // Adaptive rounding of `allocation` (checkpointed in the cache folder, so a cancelled run resumes). Progress:
  // stage "rounding", done/total in optimizer steps, detail "layer i/n NAME loss X" for live loss curves. Until
  // another allocation is used, predict(), compare() and export_to() use the rounded model. Throws Cancelled.
  RoundingSummary round(const AllocationResult& allocation, const RoundingOptions& options, const JobControl& job);
  bool rounded(const AllocationResult& allocation) const;

 private:
  struct Impl;
  explicit CompressionSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Bytes for an average bit width / a compression ratio vs fp32 over `params` weights (spec §2.5).
int64_t budget_bytes_for_avg_bits(double avg_bits, int64_t params);
int64_t budget_bytes_for_ratio(double ratio, int64_t params);
// A plain image set's listing (no decoding). Throws lorq::Error naming the folder.
ImageSetInfo list_image_set(const std::string& images, const std::string& labels);

// The embedded demo shipped in datasets/: its model folder and image set ("" when not found).
struct DemoPaths {
  std::string model_dir, images_dir, labels_csv;
};
DemoPaths find_demo();
// Sets LibTorch's threads to the core count (call once at start-up).
void init_engine();

}  // namespace lorq::api
