#include "lorq/session/api.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "final_settings_json.h"
#include "lorq/alloc/constraints_io.h"
#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/export.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/damping_choice.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/quant/gptq.h"
#include "lorq/tasks/classification.h"
#include "lorq/tasks/detection.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/tasks/output_fidelity.h"
#include "lorq/tasks/predict.h"
#include "lorq/tasks/segmentation.h"
#include "lorq/tasks/task.h"

namespace fs = std::filesystem;

namespace lorq::api {

namespace {

ModelSummary summarize(const Model& m, const std::string& path) {
  ModelSummary s;
  s.path = path;
  s.architecture = m.architecture();
  s.family = m.family();
  s.task = m.task();
  const std::map<std::string, int64_t> d = m.dimensions();
  auto dim = [&](const char* key) {
    auto it = d.find(key);
    return it == d.end() ? 0 : static_cast<int>(it->second);
  };
  s.depth = dim("depth");
  s.embed_dim = dim("embed_dim");
  s.num_heads = dim("num_heads");
  s.num_classes = m.num_labels();
  s.image_size = dim("input_height");
  for (const auto& l : m.linear_layers()) {
    s.layers.push_back(
        {l.name, l.out_features, l.in_features, l.params(), l.fp32_bytes() / 1e6, l.low_rank_allowed, l.stage});
    s.compressible_params += l.params();
  }
  for (const auto& [k, t] : m.named_tensors()) s.total_params += t.numel();
  return s;
}

EvalSummary summary_of(const EvalResult& r) {
  EvalSummary s;
  s.images = r.images;
  s.labeled = r.labeled;
  s.top1_pct = r.top1_pct();
  s.top5_pct = r.top5_pct();
  s.images_per_s = r.images_per_s();
  s.seconds = r.seconds;
  s.metrics = r.metrics;
  s.failed = r.failed;
  return s;
}

void set_fidelity(EvalSummary& s, const OutputFidelity& f) {
  s.has_fidelity = true;
  s.agreement_pct = f.agreement_pct;
  s.output_nsr = f.output_nsr;
  s.kl = f.kl;
}

}  // namespace

struct ModelHandle::Impl {
  std::unique_ptr<Model> model;
  ModelSummary summary;
};

ModelHandle::ModelHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelHandle::~ModelHandle() = default;

std::shared_ptr<ModelHandle> ModelHandle::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->model = load_model(path);
  impl->summary = summarize(*impl->model, path);
  return std::shared_ptr<ModelHandle>(new ModelHandle(std::move(impl)));
}

const ModelSummary& ModelHandle::summary() const { return impl_->summary; }

std::vector<ClassScore> ModelHandle::predict(const std::string& image_path, int k) const {
  c10::NoGradGuard no_grad;
  const Model& m = *impl_->model;
  const ModelOutputs y = impl_->model->forward(load_image(image_path, m.preprocessing()).unsqueeze(0));
  return top_k(y.logits()[0], k, m);
}

lorq::ImagePrediction ModelHandle::predict_image(const std::string& image_path, int k, double threshold) const {
  PredictOptions o;
  o.top_k = k;
  o.threshold = threshold;
  return lorq::predict_image(*impl_->model, image_path, o);
}

EvalSummary ModelHandle::evaluate(const std::string& images, const std::string& labels, int64_t limit,
                                  const JobControl& job) const {
  ImageSet set = open_image_set(images, labels, impl_->model->label_names(), impl_->model->task());
  EvalOptions o;
  o.limit = limit;
  return summary_of(lorq::evaluate(*impl_->model, set, o, job));
}

// ---- Allocator

struct Allocator::Impl {
  std::unique_ptr<LayerAllocator> allocator;
  mutable std::once_flag curve_once;
  mutable std::vector<TradeoffPoint> curve;
};

Allocator::Allocator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Allocator::~Allocator() = default;
int64_t Allocator::min_bytes() const { return impl_->allocator->min_bytes(); }
int64_t Allocator::max_bytes() const { return impl_->allocator->max_bytes(); }

AllocationResult Allocator::solve(int64_t budget) const {
  budget = std::clamp(budget, min_bytes(), max_bytes());
  return impl_->allocator->solve(budget);
}

Allocation Allocator::solve_checked(int64_t budget) const { return impl_->allocator->solve(budget); }

const std::vector<TradeoffPoint>& Allocator::tradeoff_curve() const {
  std::call_once(impl_->curve_once, [this] { impl_->curve = impl_->allocator->tradeoff_curve(); });
  return impl_->curve;
}

// ---- Session files

namespace {

using nlohmann::json;

// Version 1 kept constraints as {layer: {pinned_option, min_bits, max_rank, excluded}} with pins by option index;
// they become the constraints schema with "pin_option" (an index, checked against the analysis when resolved).
std::string constraints_from_v1(const json& c) {
  json layers = json::object();
  for (const auto& [layer, v] : c.items()) {
    json e = json::object();
    if (v.value("pinned_option", -1) >= 0) e["pin_option"] = v.value("pinned_option", -1);
    if (v.value("min_bits", 0) > 0) e["min_bits"] = v.value("min_bits", 0);
    if (v.value("max_rank", int64_t(-1)) >= 0) e["max_rank"] = v.value("max_rank", int64_t(-1));
    const std::string ex = v.value("excluded", std::string("none"));
    if (ex != "none") e["exclude"] = ex;
    layers[layer] = e;
  }
  return json{{"version", 1}, {"layers", layers}, {"groups", json::array()}}.dump(1);
}

}  // namespace

void save_session_file(const std::string& path, const SessionFile& f) {
  const AnalysisSettings& s = f.settings;
  json constraints = json::object();
  if (!f.constraints_json.empty()) {
    try {
      constraints = json::parse(f.constraints_json);
    } catch (const json::exception& e) {
      throw Error(path, std::string("cannot save: the constraints are not valid JSON (") + e.what() + ")");
    }
  }
  json doc = {{"format", "lorq-session"},
              {"version", 2},
              {"model", f.model_path},
              {"images", f.images},
              {"labels", f.labels},
              {"eval_images", f.eval_images},
              {"eval_labels", f.eval_labels},
              {"cache_dir", f.cache_dir},
              {"settings",
               {{"calibration_images", s.calibration_images},
                {"lfh_images", s.lfh_images},
                {"projections", s.projections},
                {"anchors", s.anchors},
                {"estimate", s.estimate},
                {"seed", s.seed},
                {"lfh_batch", s.lfh_batch},
                {"lfh_as_coded", s.lfh_as_coded},
                {"weighted_svd", s.weighted_svd},
                {"hessian_weighted", s.hessian_weighted},
                {"swapped_lr_size", s.swapped_lr_size},
                {"quantizer", s.quantizer},
                {"gptq_images", s.gptq_images},
                {"gptq_damping", s.gptq_damping},
                {"calibrated_errors", s.calibrated_errors}}},
              {"budget_bytes", f.budget_bytes},
              {"constraints", constraints}};
  if (f.global_errors.layers > 0)
    doc["global_errors"] = {{"measured_layers", f.global_errors.measured_layers}, {"layers", f.global_errors.layers}};
  // ---- sweep results (lorq/session/sweep.h): kept as written by SweepCache::to_json().
  if (!f.sweeps_json.empty()) {
    try {
      doc["sweeps"] = json::parse(f.sweeps_json);
    } catch (const json::exception& e) {
      throw Error(path, std::string("cannot save: the sweep results are not valid JSON (") + e.what() + ")");
    }
  }
  // ---- end of sweep results
  if (!f.methods_json.empty()) {
    try {
      doc["methods"] = json::parse(f.methods_json);
    } catch (const json::exception& e) {
      throw Error(path, std::string("cannot save: the method comparison is not valid JSON (") + e.what() + ")");
    }
  }
  if (f.final_settings) doc["final"] = final_settings_to_json(*f.final_settings);
  write_text_atomically(path, doc.dump(2) + "\n");
}

SessionFile load_session_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the session file");
  SessionFile f;
  try {
    const json doc = json::parse(in);
    if (!doc.is_object() || doc.value("format", "") != "lorq-session") throw Error(path, "not a LoRQ session file");
    const int version = doc.value("version", 1);
    if (version < 1 || version > 2)
      throw Error(path, "session file version " + std::to_string(version) + " is newer than this program (2)");
    f.model_path = doc.at("model").get<std::string>();
    f.images = doc.value("images", "");
    f.labels = doc.value("labels", "");
    f.eval_images = doc.value("eval_images", "");
    f.eval_labels = doc.value("eval_labels", "");
    f.cache_dir = doc.value("cache_dir", "");
    f.budget_bytes = doc.value("budget_bytes", int64_t(0));
    if (doc.contains("global_errors") && doc["global_errors"].is_object()) {
      f.global_errors.measured_layers = doc["global_errors"].value("measured_layers", 0);
      f.global_errors.layers = doc["global_errors"].value("layers", 0);
    }
    if (doc.contains("settings")) {
      const json& s = doc["settings"];
      AnalysisSettings& a = f.settings;
      a.calibration_images = s.value("calibration_images", a.calibration_images);
      a.lfh_images = s.value("lfh_images", a.lfh_images);
      a.projections = s.value("projections", a.projections);
      a.anchors = s.value("anchors", a.anchors);
      a.estimate = s.value("estimate", a.estimate);
      a.seed = s.value("seed", a.seed);
      a.lfh_batch = s.value("lfh_batch", a.lfh_batch);
      a.lfh_as_coded = s.value("lfh_as_coded", a.lfh_as_coded);
      a.weighted_svd = s.value("weighted_svd", a.weighted_svd);
      a.hessian_weighted = s.value("hessian_weighted", a.hessian_weighted);
      a.swapped_lr_size = s.value("swapped_lr_size", a.swapped_lr_size);
      a.quantizer = s.value("quantizer", std::string("nearest"));  // older files: nearest was the only quantizer
      a.gptq_images = s.value("gptq_images", a.gptq_images);
      a.gptq_damping = s.value("gptq_damping", 0.01);             // older files: GPTQ's usual 1 %
      a.calibrated_errors = s.value("calibrated_errors", false);  // older files: every anchor was measured
    }
    if (doc.contains("constraints") && !doc["constraints"].is_null()) {
      const json& c = doc["constraints"];
      if (!c.is_object()) throw Error(path, "\"constraints\" must be an object");
      if (version == 1)
        f.constraints_json = constraints_from_v1(c);
      else if (!c.empty())
        f.constraints_json = c.dump(1);
    }
    // ---- sweep results (lorq/session/sweep.h): parsed by SweepCache::from_json.
    if (doc.contains("sweeps") && doc["sweeps"].is_object()) f.sweeps_json = doc["sweeps"].dump(1);
    // ---- end of sweep results
    // The method comparison (lorq/session/method_comparison.h), parsed by MethodComparison::from_json.
    if (doc.contains("methods") && doc["methods"].is_object()) f.methods_json = doc["methods"].dump(1);
    if (doc.contains("final") && !doc["final"].is_null())
      f.final_settings = final_settings_from_json(doc["final"], path);
  } catch (const json::exception& e) {
    throw Error(path, std::string("malformed session file: ") + e.what());
  }
  return f;
}

// ---- Compression session

namespace {

ImageSetInfo describe(const ImageSet& set) {
  ImageSetInfo info;
  info.source = set.source;
  info.images = static_cast<int64_t>(set.size());
  for (const ImageItem& i : set.items) {
    info.files.push_back(i.path);
    if (i.label >= 0) ++info.labeled;
  }
  info.skipped = set.skipped;
  return info;
}

LayerAnalysis describe(const LayerCandidates& l, const Model& model) {
  LayerAnalysis r;
  r.name = l.layer;
  r.out_features = l.out_features;
  r.in_features = l.in_features;
  r.params = l.out_features * l.in_features;
  r.stage = model.layer(l.layer).stage;
  r.low_rank_allowed = l.low_rank_allowed;
  r.full_rank = std::min(l.out_features, l.in_features);
  std::vector<std::pair<double, double>> points;
  for (const LayerOption& o : l.options) {
    OptionRow row;
    row.label = o.label();
    row.kind = o.kind;
    row.bits = o.bits;
    row.bits_a = o.bits_a;
    row.bits_b = o.bits_b;
    row.rank = o.rank;
    row.bytes = o.bytes;
    row.error = o.error;
    row.local_loss = o.local_loss;
    row.measured = o.measured;
    r.options.push_back(row);
    points.emplace_back(static_cast<double>(o.bytes), o.error);
  }
  for (size_t i : pareto_front(points)) r.options[i].on_front = true;
  r.errors_measured = l.errors_measured;
  return r;
}

// Evaluation progress under a stage name of our own, so a log tells the runs apart.
JobControl renamed(const JobControl& job, const std::string& stage) {
  JobControl j = job;
  if (job.progress)
    j.progress = [p = job.progress, stage](const Progress& pr) {
      Progress q = pr;
      q.stage = stage;
      p(q);
    };
  return j;
}

}  // namespace

struct CompressionSession::Impl {
  std::string model_path, cache_dir;
  AnalysisSettings settings;
  std::unique_ptr<Model> model;  // the float model: never modified
  ModelSummary summary;
  ImageSet calibration;
  ImageSetInfo calibration_info;
  bool analyzed = false;
  CompressionAnalysis analysis;
  std::vector<LayerAnalysis> layers;
  std::unique_ptr<Model> compressed;  // the float model with compressed_choice applied (fake quantization)
  std::vector<int> compressed_choice;
  std::unique_ptr<FinalModel> final;  // finalize() of final_choice (replaces `compressed` for it)
  std::vector<int> final_choice;
  FinalSettings final_settings;
  std::vector<std::string> final_images;  // the images the final model was built from
  std::vector<std::string> extra_left_out;  // leave_out(): more images no evaluation scores on
  RoundingStepFn on_rounding_step;        // round(): every optimizer step, for live loss curves
  // A classifier's float logits from the last evaluate_float, and the files of their rows: later evaluations of the
  // same images report their fidelity to them (lorq/tasks/output_fidelity.h).
  std::vector<std::string> float_files;
  at::Tensor float_logits;
  // ---- revisions (analyze with revisions, adopt)
  int runs = 0;                            // analyze() calls so far (the analyzing thread only)
  int adopted_run = 0, adopted_serial = -1;  // the adopted revision (the reading thread only)
  GlobalErrorState errors;
  std::shared_ptr<const AnalysisRevision> revision_of(CompressionAnalysis a, int run, int serial, double seconds,
                                                      bool final) const;
  std::shared_ptr<const AnalysisRevision> run_analysis(const JobControl& job,
                                                       const AnalysisRevisionCallback& on_revision);
  // ---- end of revisions

  CompressSettings engine_settings() const {
    CompressSettings s;
    s.calibration.images = settings.calibration_images;
    s.calibration.seed = settings.seed;
    s.lfh_images = settings.lfh_images;
    s.lfh.projections = settings.projections;
    s.lfh.projection_batch = settings.lfh_batch;
    s.lfh.as_coded_accumulation = settings.lfh_as_coded;
    s.candidates.weighted_svd = settings.weighted_svd;
    s.candidates.hessian_weighted = settings.hessian_weighted;
    s.candidates.swapped_lr_size = settings.swapped_lr_size;
    s.candidates.quantizer = parse_quantizer(settings.quantizer);
    s.candidates.gptq_images = settings.gptq_images;
    if (settings.gptq_damping > 0)
      s.candidates.gptq.damping = settings.gptq_damping;
    else
      s.candidates.gptq_damping_choices = default_gptq_damping_choices();
    s.global_error.anchors = settings.anchors;
    s.global_error.estimate = settings.estimate;
    s.global_error.calibrated = settings.calibrated_errors;
    return s;
  }

  void require_analysis(const char* what) const {
    if (!analyzed) throw Error(std::string("run the analysis before ") + what);
  }

  Model& compressed_model(const Allocation& a) {
    require_analysis("using the compressed model");
    if (final && final_choice == a.choice) return *final->model;
    if (!compressed || compressed_choice != a.choice) {
      compressed.reset();
      auto m = model->clone();
      apply_allocation(*m, analysis, a);
      compressed = std::move(m);
      compressed_choice = a.choice;
    }
    return *compressed;
  }

  // An image set without the images the session calibrated or rounded on (never score on those).
  ImageSet held_out(const std::string& images, const std::string& labels, int64_t* left_out) const {
    ImageSet set = open_image_set(images, labels, model->label_names(), model->task());
    std::set<std::string> seen(analysis.calibration_files.begin(), analysis.calibration_files.end());
    seen.insert(analysis.moment_files.begin(), analysis.moment_files.end());
    seen.insert(final_images.begin(), final_images.end());
    seen.insert(extra_left_out.begin(), extra_left_out.end());
    const size_t before = set.items.size();
    set.items.erase(
        std::remove_if(set.items.begin(), set.items.end(), [&](const ImageItem& i) { return seen.count(i.path) > 0; }),
        set.items.end());
    if (left_out) *left_out = static_cast<int64_t>(before - set.items.size());
    if (set.items.empty()) throw Error(images, "holds no images besides the calibration images");
    return set;
  }

  // `is_float`: `m` is the float model, whose logits later evaluations compare with.
  EvalSummary evaluate_on(Model& m, const std::string& images, const std::string& labels, int64_t limit,
                          const JobControl& job, bool is_float = false) {
    int64_t left_out = 0;
    const ImageSet set = held_out(images, labels, &left_out);
    EvalOptions o;
    o.limit = limit;
    // A classifier's outputs are one row of logits per image: small enough to keep for the comparison.
    o.keep_outputs = m.task() == TaskKind::Classification;
    const EvalResult r = evaluate(m, set, o, job);
    EvalSummary s = summary_of(r);
    s.left_out = left_out;
    if (!o.keep_outputs) return s;
    std::vector<std::string> files;
    for (size_t i : r.indices) files.push_back(set.items[i].path);
    const at::Tensor logits = r.outputs.logits();
    if (is_float) {
      float_files = std::move(files);
      float_logits = logits;
    } else if (float_logits.defined() && files == float_files) {
      set_fidelity(s, output_fidelity(float_logits, logits));
    }
    return s;
  }
};

CompressionSession::CompressionSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompressionSession::~CompressionSession() = default;

std::shared_ptr<CompressionSession> CompressionSession::open(const std::string& model_path, const std::string& images,
                                                             const std::string& labels,
                                                             const AnalysisSettings& settings,
                                                             const std::string& cache_dir) {
  auto impl = std::make_unique<Impl>();
  impl->model_path = model_path;
  impl->cache_dir = cache_dir;
  impl->settings = settings;
  impl->model = load_model(model_path);
  impl->summary = summarize(*impl->model, model_path);
  impl->calibration = open_image_set(images, labels, impl->model->label_names(), impl->model->task());
  impl->calibration_info = describe(impl->calibration);
  return std::shared_ptr<CompressionSession>(new CompressionSession(std::move(impl)));
}

const ModelSummary& CompressionSession::model() const { return impl_->summary; }
const ImageSetInfo& CompressionSession::calibration_set() const { return impl_->calibration_info; }
const AnalysisSettings& CompressionSession::settings() const { return impl_->settings; }
const std::string& CompressionSession::cache_dir() const { return impl_->cache_dir; }
bool CompressionSession::analyzed() const { return impl_->analyzed; }
const std::vector<LayerAnalysis>& CompressionSession::layers() const { return impl_->layers; }
int64_t CompressionSession::compressible_params() const { return impl_->summary.compressible_params; }
const std::vector<std::string>& CompressionSession::warnings() const { return impl_->analysis.warnings; }
double CompressionSession::gptq_damping() const { return impl_->analysis.gptq_damping; }
std::vector<std::pair<double, double>> CompressionSession::gptq_damping_scores() const {
  return impl_->analysis.gptq_damping_scores;
}
std::vector<std::pair<std::string, double>> CompressionSession::stage_seconds() const {
  return impl_->analysis.stage_seconds;
}
const std::vector<std::string>& CompressionSession::cached_stages() const { return impl_->analysis.cached_stages; }
const std::vector<std::string>& CompressionSession::calibration_files() const {
  return impl_->analysis.calibration_files;
}

void CompressionSession::analyze(const JobControl& job) { adopt(impl_->run_analysis(job, {})); }

// ---- Revisions: a progressive analysis publishes complete analyses; the session changes only in adopt().

struct AnalysisRevision::Impl {
  const void* session = nullptr;  // the CompressionSession::Impl that made it
  int run = 0, serial = 0;
  CompressionAnalysis analysis;
  std::vector<LayerAnalysis> layers;
  GlobalErrorState errors;
  double seconds = 0;
  bool final = false;
};

AnalysisRevision::AnalysisRevision(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AnalysisRevision::~AnalysisRevision() = default;
const std::vector<LayerAnalysis>& AnalysisRevision::layers() const { return impl_->layers; }
GlobalErrorState AnalysisRevision::global_errors() const { return impl_->errors; }
double AnalysisRevision::seconds() const { return impl_->seconds; }
bool AnalysisRevision::final() const { return impl_->final; }

std::string GlobalErrorState::text() const {
  if (layers <= 0) return {};
  if (measured_layers >= layers) return "measured";
  if (measured_layers == 0) return "estimated (LFH)";
  return "measured " + std::to_string(measured_layers) + " of " + std::to_string(layers) + " layers";
}

std::shared_ptr<const AnalysisRevision> CompressionSession::Impl::revision_of(CompressionAnalysis a, int run,
                                                                              int serial, double seconds,
                                                                              bool final) const {
  auto r = std::make_unique<AnalysisRevision::Impl>();
  r->session = this;
  r->run = run;
  r->serial = serial;
  for (const LayerCandidates& l : a.layers) r->layers.push_back(describe(l, *model));
  r->errors = {a.layers_measured(), static_cast<int>(a.layers.size())};
  r->analysis = std::move(a);
  r->seconds = seconds;
  r->final = final;
  return std::shared_ptr<const AnalysisRevision>(new AnalysisRevision(std::move(r)));
}

// Without `on_revision` the one-pass analysis (no estimate pass); with it, estimate first and refine.
std::shared_ptr<const AnalysisRevision> CompressionSession::Impl::run_analysis(
    const JobControl& job, const AnalysisRevisionCallback& on_revision) {
  const CompressSettings s = engine_settings();
  const int run = ++runs;
  int serial = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  AnalysisRevisionFn publish;
  if (on_revision)
    publish = [&](const CompressionAnalysis& a) { on_revision(revision_of(a, run, serial++, elapsed(), false)); };
  CompressionAnalysis a = cache_dir.empty()
                              ? analyze_model(*model, calibration, s, job, nullptr, publish)
                              : analyze_model_cached(*model, model_path, calibration, s, cache_dir, job, publish);
  auto last = revision_of(std::move(a), run, serial++, elapsed(), true);
  if (on_revision) on_revision(last);
  return last;
}

void CompressionSession::analyze(const JobControl& job, const AnalysisRevisionCallback& on_revision) {
  if (!on_revision) return analyze(job);
  impl_->run_analysis(job, on_revision);
}

bool CompressionSession::adopt(const std::shared_ptr<const AnalysisRevision>& revision) {
  if (!revision) return false;
  const AnalysisRevision::Impl& r = *revision->impl_;
  if (r.session != impl_.get()) throw Error("an analysis revision can only be adopted by the session that made it");
  if (r.run < impl_->adopted_run || (r.run == impl_->adopted_run && r.serial <= impl_->adopted_serial)) return false;
  if (r.run != impl_->adopted_run) {  // another analysis: the models built from the previous one go
    impl_->compressed.reset();
    impl_->compressed_choice.clear();
    impl_->final.reset();
    impl_->final_choice.clear();
    impl_->final_images.clear();
  }
  impl_->analysis = r.analysis;
  impl_->layers = r.layers;
  impl_->errors = r.errors;
  impl_->adopted_run = r.run;
  impl_->adopted_serial = r.serial;
  impl_->analyzed = true;
  return true;
}

GlobalErrorState CompressionSession::global_errors() const { return impl_->errors; }

// ---- end of revisions

bool CompressionSession::has_cached_analysis() const {
  if (impl_->cache_dir.empty()) return false;
  const SessionCache cache(impl_->cache_dir, impl_->model_path, impl_->calibration, impl_->engine_settings());
  CompressionAnalysis a;
  std::vector<std::string> warnings;
  return cache.load_analysis(true, &a, &warnings);
}

std::shared_ptr<const Allocator> CompressionSession::make_allocator(const Constraints& constraints) const {
  impl_->require_analysis("allocating");
  auto impl = std::make_unique<Allocator::Impl>();
  impl->allocator = std::make_unique<LayerAllocator>(impl_->analysis, constraints);
  return std::shared_ptr<const Allocator>(new Allocator(std::move(impl)));
}

std::shared_ptr<const Allocator> CompressionSession::make_allocator(const ConstraintMap& constraints) const {
  return make_allocator(constraints, {});
}

namespace {
Constraints joined(const ConstraintMap& constraints, const LayerGroups& groups) {
  Constraints c;
  for (const auto& [layer, k] : constraints)
    if (!k.empty()) c.layers[layer] = k;
  c.groups = groups;
  return c;
}
}  // namespace

std::shared_ptr<const Allocator> CompressionSession::make_allocator(const ConstraintMap& constraints,
                                                                    const LayerGroups& groups) const {
  return make_allocator(joined(constraints, groups));
}

std::string CompressionSession::constraints_to_json(const ConstraintMap& constraints, const LayerGroups& groups) const {
  return constraints_json(joined(constraints, groups));
}

void CompressionSession::constraints_from_json(const std::string& text, const std::string& source,
                                               ConstraintMap* constraints, LayerGroups* groups) const {
  const Constraints c = parse_constraints(text, source);
  *constraints = c.layers;
  *groups = c.groups;
}

Constraints CompressionSession::parse_constraints(const std::string& json_text, const std::string& source) const {
  impl_->require_analysis("reading constraints");
  return lorq::constraints_from_json(json_text, impl_->analysis, source);
}

std::string CompressionSession::constraints_json(const Constraints& constraints) const {
  impl_->require_analysis("writing constraints");
  return lorq::constraints_to_json(constraints, impl_->analysis);
}

int64_t CompressionSession::budget_for_avg_bits(double avg_bits) const {
  return budget_bytes_for_avg_bits(avg_bits, impl_->summary.compressible_params);
}

int64_t CompressionSession::budget_for_ratio(double ratio) const {
  return budget_bytes_for_ratio(ratio, impl_->summary.compressible_params);
}

Allocation CompressionSession::uniform_allocation(int bits) const {
  impl_->require_analysis("allocating");
  return lorq::uniform_allocation(impl_->analysis, bits);
}

LayerAnalysis CompressionSession::analyze_layer(const std::string& layer, const JobControl& job) {
  Model& model = *impl_->model;
  const LinearLayerInfo& info = model.layer(layer);
  const CompressSettings s = impl_->engine_settings();
  const Calibration calib = calibrate(model, impl_->calibration, s.calibration, job);
  const int64_t n = std::min<int64_t>(s.lfh_images, calib.images.size(0));
  const auto H = label_free_hessian(model, calib.images.slice(0, 0, n), s.lfh, job);
  std::vector<LayerCandidates> layers{
      build_layer_candidates(layer, model.weight(layer), H.at(layer), info.low_rank_allowed, s.candidates)};
  measure_global_errors(model, calib, layers, s.global_error, job, &H);
  LayerAnalysis out = describe(layers[0], model);
  out.candidates_considered = layers[0].candidates_considered;
  return out;
}

std::vector<ClassScore> CompressionSession::predict(const std::string& image_path, int k,
                                                    const AllocationResult* compressed) {
  c10::NoGradGuard no_grad;
  Model& m = compressed ? impl_->compressed_model(*compressed) : *impl_->model;
  const ModelOutputs y = m.forward(load_image(image_path, m.preprocessing()).unsqueeze(0));
  return top_k(y.logits()[0], k, m);
}

lorq::ImagePrediction CompressionSession::predict_image(const std::string& image_path, int k, double threshold,
                                                      const AllocationResult* compressed) {
  Model& m = compressed ? impl_->compressed_model(*compressed) : *impl_->model;
  PredictOptions o;
  o.top_k = k;
  o.threshold = threshold;
  return lorq::predict_image(m, image_path, o);
}

ComparisonResult CompressionSession::compare(const std::string& images, const std::string& labels, int64_t limit, int k,
                                             const AllocationResult& allocation, const JobControl& job) {
  c10::NoGradGuard no_grad;
  const Model& fm = *impl_->model;
  const Task& task = task_of(fm);
  const ImageSet set = impl_->held_out(images, labels, nullptr);
  EvalOptions o;
  o.limit = limit;
  o.keep_outputs = true;
  const EvalResult f = evaluate(*impl_->model, set, o, renamed(job, "eval float"));
  Model& cm = impl_->compressed_model(allocation);
  const EvalResult q = evaluate(cm, set, o, renamed(job, "eval compressed"));
  ComparisonResult out{summary_of(f), summary_of(q), {}};
  if (task.kind() == TaskKind::Classification && f.indices == q.indices) {
    set_fidelity(out.compressed_eval, output_fidelity(f.outputs.logits(), q.outputs.logits()));
  }
  std::map<size_t, int64_t> row_of;  // set position -> row of the compressed outputs
  for (size_t r = 0; r < q.indices.size(); ++r) row_of[q.indices[r]] = static_cast<int64_t>(r);
  for (size_t r = 0; r < f.indices.size(); ++r) {
    auto it = row_of.find(f.indices[r]);
    if (it == row_of.end()) continue;
    const ModelOutputs fr = f.outputs.row(static_cast<int64_t>(r)), qr = q.outputs.row(it->second);
    const OutputChange change = task.output_change(fr, qr);
    ImageComparison ic;
    ic.path = set.items[f.indices[r]].path;
    ic.label = set.items[f.indices[r]].label;
    ic.change = change.score;
    const ImageGeometry& g = f.geometry[r];
    ic.width = static_cast<int>(g.image_w);
    ic.height = static_cast<int>(g.image_h);
    const auto [in_h, in_w] = f.input_sizes[r];
    const auto [qin_h, qin_w] = q.input_sizes[static_cast<size_t>(it->second)];
    switch (task.kind()) {
      case TaskKind::Classification:
        ic.float_top = top_k(fr.logits()[0], k, fm);
        ic.compressed_top = top_k(qr.logits()[0], k, fm);
        ic.kl = change.score;
        ic.max_prob_change = change.max_prob_change;
        break;
      case TaskKind::Detection:
        ic.float_detections = detections_of(fr, 0, in_h, in_w, g, out.min_score, &fm);
        ic.compressed_detections = detections_of(qr, 0, qin_h, qin_w, g, out.min_score, &fm);
        ic.matched = change.matched;
        ic.lost = change.lost;
        ic.added = change.added;
        break;
      case TaskKind::Segmentation:
        ic.float_map = label_map_of(fr, 0, in_h, in_w, g);
        ic.compressed_map = label_map_of(qr, 0, qin_h, qin_w, g);
        break;
    }
    out.images.push_back(std::move(ic));
  }
  std::stable_sort(out.images.begin(), out.images.end(),
                   [](const ImageComparison& x, const ImageComparison& y) { return x.change > y.change; });
  return out;
}

void CompressionSession::export_to(const std::string& out_dir, const AllocationResult& allocation) {
  impl_->require_analysis("exporting");
  const FinalModel* f = impl_->final && impl_->final_choice == allocation.choice ? impl_->final.get() : nullptr;
  if (f)
    export_compressed(out_dir, *f->model, impl_->model_path, impl_->analysis, allocation, f->layers,
                      f->activations_quantized ? &f->activations : nullptr, seen_images(),
                      lraqvit_blocks_metadata(f->blocks));
  else
    export_compressed(out_dir, *impl_->model, impl_->model_path, impl_->analysis, allocation, {}, nullptr,
                      seen_images());
}

FinalSummary CompressionSession::finalize(const Allocation& allocation, const FinalSettings& o, const JobControl& job) {
  impl_->require_analysis("building the final model");
  Model& model = *impl_->model;
  FinalModelSettings fs;
  fs.refit = o.refit;
  fs.quantizer = parse_quantizer(impl_->settings.quantizer);
  // A refit compensates with the analysis' damping (an analysis cached before it was recorded: the settings' one, or
  // GPTQ's usual 0.01 where the settings chose it).
  if (impl_->analysis.gptq_damping > 0)
    fs.gptq.damping = impl_->analysis.gptq_damping;
  else if (impl_->settings.gptq_damping > 0)
    fs.gptq.damping = impl_->settings.gptq_damping;
  if (o.per_token_activations && o.activation_bits <= 0)
    throw Error("per-token activation quantization needs activation bits (4, 6 or 8)");
  if (o.wads && o.activation_bits <= 0)
    throw Error("WADS needs activation quantization (activation bits 4, 6 or 8): weights alone gain nothing from it");
  if (o.wads_steps < 0 || o.recovery_steps < 0 || !(o.recovery_lr > 0))
    throw Error("WADS steps and recovery steps must be >= 0 and the recovery learning rate > 0");
  fs.blocks.per_token_bits = o.per_token_activations ? o.activation_bits : 0;
  fs.blocks.wads = o.wads;
  fs.blocks.wads_steps = o.wads_steps;
  fs.blocks.wads_act_bits = o.activation_bits > 0 ? o.activation_bits : 8;
  fs.blocks.wads_weight_bits =
      static_cast<int>(std::lround(8.0 * allocation.bytes / std::max<int64_t>(1, impl_->analysis.compressible_params)));
  fs.blocks.recovery_steps = o.recovery_steps;
  fs.blocks.recovery_lr = o.recovery_lr;
  if (o.recovery_steps > 0 && !impl_->cache_dir.empty()) {
    // The distillation checkpoint identifies the teacher, images and settings, not the student: the file name
    // carries what makes the student (the allocation and the final settings), so another allocation never resumes it.
    std::string key = impl_->settings.quantizer;
    for (int c : allocation.choice) key += "," + std::to_string(c);
    key += ";" + std::to_string(o.activation_bits) + (o.per_token_activations ? "t" : "s") +
           (o.activation_mp ? "m" : "") + (o.ridge ? "r" : "") + (o.refit ? "f" : "") +
           (o.wads ? "w" + std::to_string(o.wads_steps) : "") + ";" + std::to_string(o.recovery_lr) +
           ";" + std::to_string(o.recovery_images);
    fs.blocks.recovery_checkpoint =
        impl_->cache_dir + "/recovery-" + fnv1a64_hex(key.data(), key.size()) + ".safetensors";
  }
  fs.activations.enabled = o.activation_bits > 0 && !o.per_token_activations;
  fs.activations.bits = o.activation_bits > 0 ? o.activation_bits : 8;
  fs.activations.mixed_precision = o.activation_mp;
  fs.activations.ridge_regression = o.ridge;
  const CompressSettings cs = impl_->engine_settings();
  fs.lfh = cs.lfh;
  fs.lfh_images = cs.lfh_images;
  fs.round = o.round;
  fs.keep_learned_on_cancel = o.keep_learned_on_cancel;
  fs.on_rounding_step = impl_->on_rounding_step;
  fs.rounding.iterations = std::max(1, o.round_iterations);
  fs.rounding.images = std::max(1, o.round_images);
  fs.rounding.augmented_views = std::max(0, o.round_views);
  fs.rounding.scope = o.round_per_layer ? RoundingScope::Layer : RoundingScope::Segment;
  if (o.round)
    fs.rounding_checkpoint = !o.round_checkpoint.empty() ? o.round_checkpoint
                             : impl_->cache_dir.empty()  ? ""
                                                         : impl_->cache_dir + "/rounding.safetensors";
  // The analysis' calibration images first, then more of the calibration set when rounding wants more.
  const ImageSet set = split_final_images(impl_->calibration, impl_->analysis.calibration_files,
                                          o.round ? static_cast<size_t>(fs.rounding.images) : 0)
                           .train;
  const ImageBatch images = load_batch(set, 0, set.size(), model.preprocessing(), 2);
  FinalSummary out;
  for (const auto& failed : images.failed) out.warnings.push_back("skipped " + failed);
  if (o.round) fs.rounding.images = static_cast<int>(images.images.size(0));
  ImageSet recovery_set;
  if (o.recovery_steps > 0) {
    if (o.recovery_images < 1) throw Error("recovery images must be >= 1");
    recovery_set = split_final_images(impl_->calibration, impl_->analysis.calibration_files,
                                      static_cast<size_t>(o.recovery_images))
                       .train;
    const ImageBatch r = load_batch(recovery_set, 0, recovery_set.size(), model.preprocessing(), 2);
    for (const auto& failed : r.failed) out.warnings.push_back("skipped " + failed);
    fs.recovery_images = r.images;
  }
  auto final_model =
      std::make_unique<FinalModel>(build_final_model(model, impl_->analysis, allocation, images.images, fs, job));
  out.stage_seconds = final_model->stage_seconds;
  out.rounding_cancelled = final_model->rounding_cancelled;
  out.learned_layers = final_model->learned_layers;
  out.compressed_layers = final_model->compressed_layers;
  for (const auto& l : final_model->rounding.layers) {
    ++out.rounded_layers;
    out.nearest_error += l.nearest_error / l.group;  // a group's loss once
    out.learned_error += l.learned_error / l.group;
  }
  out.warnings.insert(out.warnings.end(), final_model->rounding.warnings.begin(), final_model->rounding.warnings.end());
  for (const auto& w : final_model->blocks_report.wads) {
    ++out.wads_points;
    out.wads_error_before += w.identity_error;
    out.wads_error_after += w.final_error;
  }
  out.recovery_loss_before = final_model->blocks_report.recovery_loss_before;
  out.recovery_loss_after = final_model->blocks_report.recovery_loss_after;
  out.warnings.insert(out.warnings.end(), final_model->blocks_report.recovery.warnings.begin(),
                      final_model->blocks_report.recovery.warnings.end());
  impl_->final = std::move(final_model);
  impl_->final_choice = allocation.choice;
  impl_->final_settings = o;
  impl_->final_images.clear();
  for (const ImageItem& i : set.items) impl_->final_images.push_back(i.path);
  for (const ImageItem& i : recovery_set.items)
    if (std::find(impl_->final_images.begin(), impl_->final_images.end(), i.path) == impl_->final_images.end())
      impl_->final_images.push_back(i.path);
  return out;
}

void CompressionSession::leave_out(const std::vector<std::string>& files) {
  impl_->extra_left_out.insert(impl_->extra_left_out.end(), files.begin(), files.end());
}

std::vector<std::string> CompressionSession::seen_images() const {
  std::vector<std::string> out = impl_->analysis.calibration_files;
  for (const auto& f : impl_->analysis.moment_files)
    if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  for (const auto& f : impl_->final_images)
    if (std::find(out.begin(), out.end(), f) == out.end()) out.push_back(f);
  return out;
}

EvalSummary CompressionSession::evaluate_float(const std::string& images, const std::string& labels, int64_t limit,
                                               const JobControl& job) {
  return impl_->evaluate_on(*impl_->model, images, labels, limit, renamed(job, "eval float"), true);
}

EvalSummary CompressionSession::evaluate_compressed(const Allocation& allocation, const std::string& images,
                                                    const std::string& labels, int64_t limit, const JobControl& job) {
  return impl_->evaluate_on(impl_->compressed_model(allocation), images, labels, limit,
                            renamed(job, "eval compressed"));
}

EvalSummary CompressionSession::evaluate_uniform(int bits, const std::string& images, const std::string& labels,
                                                 int64_t limit, const JobControl& job) {
  impl_->require_analysis("evaluating a uniform baseline");
  auto m = impl_->model->clone();
  apply_allocation(*m, impl_->analysis, lorq::uniform_allocation(impl_->analysis, bits));
  return impl_->evaluate_on(*m, images, labels, limit, renamed(job, "eval uniform"));
}

bool CompressionSession::rounded(const AllocationResult& allocation) const {
  return impl_->final && impl_->final_settings.round && impl_->final_choice == allocation.choice;
}

RoundingSummary CompressionSession::round(const AllocationResult& allocation, const RoundingOptions& o,
                                          const JobControl& job) {
  FinalSettings fs;
  fs.round = true;
  fs.round_iterations = o.iterations;
  fs.round_images = o.images;
  fs.activation_bits = o.activation_bits;
  fs.keep_learned_on_cancel = true;  // the workbench's Cancel keeps what was learned
  int64_t compressed_layers = 0;
  for (int c : allocation.choice) compressed_layers += c != kKeepFloat;
  const int64_t total_steps = compressed_layers * std::max(1, o.iterations);
  int64_t steps = 0;
  const auto start = std::chrono::steady_clock::now();
  // Per optimizer step, for live loss curves; the engine's own per-layer rounding reports would fight these.
  JobControl inner{[&](const Progress& p) {
                     if (p.stage != "rounding") job.report(p);
                   },
                   job.cancel};
  impl_->on_rounding_step = [&](const RoundingStep& st) {
    // Steps of layers learned together count for each of them.
    steps = static_cast<int64_t>(st.layer_index) * std::max(1, o.iterations) +
            static_cast<int64_t>(st.group) * (st.iteration + 1);
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char detail[200];
    if (st.group > 1)
      std::snprintf(detail, sizeof detail, "layers %d-%d/%d %s loss %.6g", st.layer_index + 1,
                    st.layer_index + st.group, st.layers, st.layer.c_str(), st.reconstruction + st.regularizer);
    else
      std::snprintf(detail, sizeof detail, "layer %d/%d %s loss %.6g", st.layer_index + 1, st.layers, st.layer.c_str(),
                    st.reconstruction + st.regularizer);
    job.report({"rounding", steps, total_steps, elapsed, detail});
  };
  FinalSummary f;
  try {
    f = finalize(allocation, fs, inner);
  } catch (...) {
    impl_->on_rounding_step = nullptr;
    throw;
  }
  impl_->on_rounding_step = nullptr;
  RoundingSummary out;
  out.layers = f.rounded_layers;
  out.nearest_error = f.nearest_error;
  out.learned_error = f.learned_error;
  for (const auto& [name, sec] : f.stage_seconds)
    if (name == "adaptive rounding") out.seconds = sec;
  out.warnings = f.warnings;
  out.cancelled = f.rounding_cancelled;
  out.learned_layers = f.learned_layers;
  out.compressed_layers = f.compressed_layers;
  return out;
}

std::string RoundingSummary::message() const {
  if (!cancelled) return "";
  return std::to_string(learned_layers) + " of " + std::to_string(compressed_layers) +
         " layers learned; the rest keep nearest rounding";
}

ImageSetInfo list_image_set(const std::string& images, const std::string& labels, TaskKind task) {
  return describe(open_image_set(images, labels, {}, task));
}

DemoPaths find_demo() {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("LORQ_DEMO_DIR")) roots.emplace_back(env);
#ifdef LORQ_DEMO_DIR
  roots.emplace_back(LORQ_DEMO_DIR);
#endif
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    roots.push_back(exe.parent_path() / "../share/lorq/datasets");
    roots.push_back(exe.parent_path() / "../datasets");
    roots.push_back(exe.parent_path() / "../../datasets");
  }
  for (const fs::path& r : roots) {
    if (fs::is_regular_file(r / "demo-vit" / "model.safetensors", ec)) {
      DemoPaths d;
      d.model_dir = (r / "demo-vit").lexically_normal().string();
      d.images_dir = (r / "demo-shapes" / "images").lexically_normal().string();
      d.labels_csv = (r / "demo-shapes" / "labels.csv").lexically_normal().string();
      if (!fs::is_regular_file(d.labels_csv, ec)) d.labels_csv.clear();
      if (fs::is_regular_file(r / "demo-yolos" / "model.safetensors", ec))
        d.detector_dir = (r / "demo-yolos").lexically_normal().string();
      if (fs::is_regular_file(r / "demo-segformer" / "model.safetensors", ec))
        d.segmenter_dir = (r / "demo-segformer").lexically_normal().string();
      if (fs::is_directory(r / "demo-scenes" / "images", ec))
        d.scenes_dir = (r / "demo-scenes" / "images").lexically_normal().string();
      return d;
    }
  }
  return {};
}

void init_engine() { init_threads(); }

}  // namespace lorq::api
