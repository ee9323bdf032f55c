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

#include "lorq/pipeline/compress.h"
#include "lorq/alloc/constraints_io.h"
#include "lorq/common/error.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/io/export.h"
#include "lorq/common/file_util.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/session_cache.h"

namespace fs = std::filesystem;

namespace lorq::api {

struct ModelHandle::Impl {
  std::unique_ptr<Model> model;
  ModelSummary summary;
};

ModelHandle::ModelHandle(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ModelHandle::~ModelHandle() = default;

std::shared_ptr<ModelHandle> ModelHandle::open(const std::string& path) {
  auto impl = std::make_unique<Impl>();
  impl->model = load_model(path);
  const ModelConfig& c = impl->model->config();
  ModelSummary& s = impl->summary;
  s.path = path;
  s.architecture = c.architecture;
  s.depth = c.depth;
  s.embed_dim = c.embed_dim;
  s.num_heads = c.num_heads;
  s.num_classes = c.num_classes;
  s.image_size = c.img_size;
  for (const auto& l : impl->model->linear_layers()) {
    s.layers.push_back(
        {l.name, l.out_features, l.in_features, l.params(), l.fp32_bytes() / 1e6, l.low_rank_allowed, l.stage});
    s.compressible_params += l.params();
  }
  for (const auto& [k, t] : impl->model->named_tensors()) s.total_params += t.numel();
  return std::shared_ptr<ModelHandle>(new ModelHandle(std::move(impl)));
}

const ModelSummary& ModelHandle::summary() const { return impl_->summary; }

std::vector<ClassScore> ModelHandle::predict(const std::string& image_path, int k) const {
  c10::NoGradGuard no_grad;
  const ModelConfig& c = impl_->model->config();
  at::Tensor logits = impl_->model->forward(load_image(image_path, c.preprocessing).unsqueeze(0))[0];
  std::vector<ClassScore> out;
  for (const Prediction& p : top_k(logits, k, c)) out.push_back({p.class_index, p.probability, p.label});
  return out;
}

EvalSummary ModelHandle::evaluate(const std::string& images, const std::string& labels, int64_t limit,
                                  const JobControl& job) const {
  ImageSet set = open_image_set(images, labels, impl_->model->config().label_names);
  EvalOptions o;
  o.limit = limit;
  EvalResult r = lorq::evaluate(*impl_->model, set, o, job);
  return {r.images, r.labeled, r.top1_pct(), r.top5_pct(), r.images_per_s(), r.seconds, r.failed};
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
  const Allocation a = impl_->allocator->solve(budget);
  return {a.budget_bytes, a.bytes, a.predicted_error, a.choice};
}

const std::vector<TradeoffPoint>& Allocator::tradeoff_curve() const {
  std::call_once(impl_->curve_once, [this] {
    for (const CurvePoint& p : impl_->allocator->tradeoff_curve()) impl_->curve.push_back({p.bytes, p.error});
  });
  return impl_->curve;
}

// ---- Session files

namespace {

using nlohmann::json;

const char* exclusion_name(Exclusion e) { return e == Exclusion::Q8 ? "q8" : e == Exclusion::Float ? "float" : "none"; }

Exclusion exclusion_from(const std::string& s) {
  return s == "q8" ? Exclusion::Q8 : s == "float" ? Exclusion::Float : Exclusion::None;
}

}  // namespace

void save_session_file(const std::string& path, const SessionFile& f) {
  json constraints = json::object();
  for (const auto& [layer, c] : f.constraints)
    if (!c.empty())
      constraints[layer] = {{"pinned_option", c.pinned_option},
                            {"min_bits", c.min_bits},
                            {"max_rank", c.max_rank},
                            {"excluded", exclusion_name(c.excluded)}};
  const AnalysisSettings& s = f.settings;
  json doc = {{"format", "lorq-session"},
              {"version", 1},
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
                {"seed", s.seed}}},
              {"budget_bytes", f.budget_bytes},
              {"constraints", constraints}};
  if (!f.groups.empty()) doc["groups"] = f.groups;
  write_text_atomically(path, doc.dump(2) + "\n");
}

SessionFile load_session_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the session file");
  SessionFile f;
  try {
    const json doc = json::parse(in);
    if (doc.value("format", "") != "lorq-session") throw Error(path, "not a LoRQ session file");
    f.model_path = doc.at("model").get<std::string>();
    f.images = doc.value("images", "");
    f.labels = doc.value("labels", "");
    f.eval_images = doc.value("eval_images", "");
    f.eval_labels = doc.value("eval_labels", "");
    f.cache_dir = doc.value("cache_dir", "");
    f.budget_bytes = doc.value("budget_bytes", int64_t(0));
    if (doc.contains("settings")) {
      const json& s = doc["settings"];
      f.settings.calibration_images = s.value("calibration_images", f.settings.calibration_images);
      f.settings.lfh_images = s.value("lfh_images", f.settings.lfh_images);
      f.settings.projections = s.value("projections", f.settings.projections);
      f.settings.anchors = s.value("anchors", f.settings.anchors);
      f.settings.estimate = s.value("estimate", f.settings.estimate);
      f.settings.seed = s.value("seed", f.settings.seed);
    }
    if (doc.contains("constraints"))
      for (const auto& [layer, c] : doc["constraints"].items()) {
        LayerConstraint k;
        k.pinned_option = c.value("pinned_option", -1);
        k.min_bits = c.value("min_bits", 0);
        k.max_rank = c.value("max_rank", int64_t(-1));
        k.excluded = exclusion_from(c.value("excluded", "none"));
        f.constraints[layer] = k;
      }
    if (doc.contains("groups")) f.groups = doc["groups"].get<LayerGroups>();
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

std::vector<LayerAnalysis> describe(const CompressionAnalysis& a, const Model& model) {
  std::vector<LayerAnalysis> out;
  for (const LayerCandidates& l : a.layers) {
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
      row.kind = o.kind == lorq::OptionKind::Quant ? OptionKind::Quant : OptionKind::LowRank;
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
    out.push_back(std::move(r));
  }
  return out;
}

lorq::Constraints to_engine(const ConstraintMap& m) {
  lorq::Constraints k;
  for (const auto& [layer, c] : m) {
    if (c.empty()) continue;
    lorq::LayerConstraint e;
    e.pinned_option = c.pinned_option;
    e.min_bits = c.min_bits;
    e.max_rank = c.max_rank;
    e.excluded = c.excluded == Exclusion::Q8      ? lorq::Exclusion::Q8
                 : c.excluded == Exclusion::Float ? lorq::Exclusion::Float
                                                  : lorq::Exclusion::None;
    k.layers[layer] = e;
  }
  return k;
}

Allocation to_engine(const AllocationResult& r) { return {r.budget_bytes, r.choice, r.bytes, r.predicted_error}; }

std::vector<ClassScore> scores(const at::Tensor& logits_row, int k, const ModelConfig& c) {
  std::vector<ClassScore> out;
  for (const Prediction& p : top_k(logits_row, k, c)) out.push_back({p.class_index, p.probability, p.label});
  return out;
}

// Evaluation progress under a stage name of our own, so a log tells the two runs apart.
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
  std::unique_ptr<Model> model;
  ModelSummary summary;
  ImageSet calibration;
  ImageSetInfo calibration_info;
  bool analyzed = false;
  CompressionAnalysis analysis;
  std::vector<LayerAnalysis> layers;
  std::unique_ptr<Model> compressed;  // the float model with compressed_choice applied
  std::vector<int> compressed_choice;
  std::unique_ptr<FinalModel> rounded;  // adaptive rounding of rounded_choice (replaces `compressed` for it)
  std::vector<int> rounded_choice;

  CompressSettings engine_settings() const {
    CompressSettings s;
    s.calibration.images = settings.calibration_images;
    s.calibration.seed = settings.seed;
    s.lfh_images = settings.lfh_images;
    s.lfh.projections = settings.projections;
    s.global_error.anchors = settings.anchors;
    s.global_error.estimate = settings.estimate;
    return s;
  }

  Model& compressed_model(const AllocationResult& a) {
    if (!analyzed) throw Error("run the analysis before using the compressed model");
    if (rounded && rounded_choice == a.choice) return *rounded->model;
    if (!compressed || compressed_choice != a.choice) {
      compressed.reset();
      auto m = load_model(model_path);
      apply_allocation(*m, analysis, to_engine(a));
      compressed = std::move(m);
      compressed_choice = a.choice;
    }
    return *compressed;
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
  auto handle = ModelHandle::open(model_path);
  impl->summary = handle->summary();
  impl->model = load_model(model_path);
  impl->calibration = open_image_set(images, labels, impl->model->config().label_names);
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
std::vector<std::pair<std::string, double>> CompressionSession::stage_seconds() const {
  return impl_->analysis.stage_seconds;
}
const std::vector<std::string>& CompressionSession::calibration_files() const {
  return impl_->analysis.calibration_files;
}

void CompressionSession::analyze(const JobControl& job) {
  const CompressSettings s = impl_->engine_settings();
  CompressionAnalysis a = impl_->cache_dir.empty() ? analyze_model(*impl_->model, impl_->calibration, s, job)
                                                   : analyze_model_cached(*impl_->model, impl_->model_path,
                                                                          impl_->calibration, s, impl_->cache_dir, job);
  impl_->layers = describe(a, *impl_->model);
  impl_->analysis = std::move(a);
  impl_->compressed.reset();
  impl_->compressed_choice.clear();
  impl_->rounded.reset();
  impl_->rounded_choice.clear();
  impl_->analyzed = true;
}

bool CompressionSession::has_cached_analysis() const {
  if (impl_->cache_dir.empty()) return false;
  const SessionCache cache(impl_->cache_dir, impl_->model_path, impl_->calibration, impl_->engine_settings());
  CompressionAnalysis a;
  std::vector<std::string> warnings;
  return cache.load_analysis(true, &a, &warnings);
}

std::shared_ptr<const Allocator> CompressionSession::make_allocator(const ConstraintMap& constraints) const {
  return make_allocator(constraints, {});
}

std::shared_ptr<const Allocator> CompressionSession::make_allocator(const ConstraintMap& constraints,
                                                                    const LayerGroups& groups) const {
  if (!impl_->analyzed) throw Error("run the analysis before allocating");
  lorq::Constraints engine = to_engine(constraints);
  engine.groups = groups;
  auto impl = std::make_unique<Allocator::Impl>();
  impl->allocator = std::make_unique<LayerAllocator>(impl_->analysis, engine);
  return std::shared_ptr<const Allocator>(new Allocator(std::move(impl)));
}

std::string CompressionSession::constraints_to_json(const ConstraintMap& constraints, const LayerGroups& groups) const {
  if (!impl_->analyzed) throw Error("run the analysis before writing constraints");
  lorq::Constraints engine = to_engine(constraints);
  engine.groups = groups;
  return lorq::constraints_to_json(engine, impl_->analysis);
}

void CompressionSession::constraints_from_json(const std::string& text, const std::string& source,
                                               ConstraintMap* constraints, LayerGroups* groups) const {
  if (!impl_->analyzed) throw Error(source, "run the analysis before reading constraints");
  const lorq::Constraints engine = lorq::constraints_from_json(text, impl_->analysis, source);
  constraints->clear();
  for (const auto& [layer, e] : engine.layers) {
    LayerConstraint c;
    c.pinned_option = e.pinned_option;
    c.min_bits = e.min_bits;
    c.max_rank = e.max_rank;
    c.excluded = e.excluded == lorq::Exclusion::Q8      ? Exclusion::Q8
                 : e.excluded == lorq::Exclusion::Float ? Exclusion::Float
                                                        : Exclusion::None;
    if (!c.empty()) (*constraints)[layer] = c;
  }
  *groups = engine.groups;
}

std::vector<ClassScore> CompressionSession::predict(const std::string& image_path, int k,
                                                    const AllocationResult* compressed) {
  c10::NoGradGuard no_grad;
  Model& m = compressed ? impl_->compressed_model(*compressed) : *impl_->model;
  const ModelConfig& c = m.config();
  at::Tensor logits = m.forward(load_image(image_path, c.preprocessing).unsqueeze(0))[0];
  return scores(logits, k, c);
}

ComparisonResult CompressionSession::compare(const std::string& images, const std::string& labels, int64_t limit, int k,
                                             const AllocationResult& allocation, const JobControl& job) {
  c10::NoGradGuard no_grad;
  const ModelConfig& c = impl_->model->config();
  ImageSet set = open_image_set(images, labels, c.label_names);
  // Never score on the images the analysis calibrated on.
  const std::set<std::string> seen(impl_->analysis.calibration_files.begin(), impl_->analysis.calibration_files.end());
  set.items.erase(
      std::remove_if(set.items.begin(), set.items.end(), [&](const ImageItem& i) { return seen.count(i.path) > 0; }),
      set.items.end());
  if (set.items.empty()) throw Error(images, "holds no images besides the calibration images");
  EvalOptions o;
  o.limit = limit;
  o.keep_logits = true;
  const EvalResult f = evaluate(*impl_->model, set, o, renamed(job, "eval float"));
  Model& cm = impl_->compressed_model(allocation);
  const EvalResult q = evaluate(cm, set, o, renamed(job, "eval compressed"));
  auto summary = [](const EvalResult& r) {
    return EvalSummary{r.images, r.labeled, r.top1_pct(), r.top5_pct(), r.images_per_s(), r.seconds, r.failed};
  };
  ComparisonResult out{summary(f), summary(q), {}};
  std::map<size_t, int64_t> row_of;  // set position -> row of the compressed logits
  for (size_t r = 0; r < q.indices.size(); ++r) row_of[q.indices[r]] = static_cast<int64_t>(r);
  const at::Tensor pf = at::softmax(f.logits.to(at::kDouble), 1), pq = at::softmax(q.logits.to(at::kDouble), 1);
  for (size_t r = 0; r < f.indices.size(); ++r) {
    auto it = row_of.find(f.indices[r]);
    if (it == row_of.end()) continue;
    const at::Tensor a = pf[static_cast<int64_t>(r)], b = pq[it->second];
    ImageComparison ic;
    ic.path = set.items[f.indices[r]].path;
    ic.label = set.items[f.indices[r]].label;
    ic.float_top = scores(f.logits[static_cast<int64_t>(r)], k, c);
    ic.compressed_top = scores(q.logits[it->second], k, c);
    ic.kl = (a * (at::log(a.clamp_min(1e-30)) - at::log(b.clamp_min(1e-30)))).sum().item<double>();
    ic.max_prob_change = (a - b).abs().max().item<double>();
    out.images.push_back(std::move(ic));
  }
  std::stable_sort(out.images.begin(), out.images.end(),
                   [](const ImageComparison& x, const ImageComparison& y) { return x.kl > y.kl; });
  return out;
}

void CompressionSession::export_to(const std::string& out_dir, const AllocationResult& allocation) {
  if (!impl_->analyzed) throw Error("run the analysis before exporting");
  const FinalModel* r = rounded(allocation) ? impl_->rounded.get() : nullptr;
  if (r)
    export_compressed(out_dir, *r->model, impl_->model_path, impl_->analysis, to_engine(allocation), r->layers,
                      r->activations_quantized ? &r->activations : nullptr);
  else
    export_compressed(out_dir, *impl_->model, impl_->model_path, impl_->analysis, to_engine(allocation));
}

bool CompressionSession::rounded(const AllocationResult& allocation) const {
  return impl_->rounded && impl_->rounded_choice == allocation.choice;
}

RoundingSummary CompressionSession::round(const AllocationResult& allocation, const RoundingOptions& o,
                                          const JobControl& job) {
  if (!impl_->analyzed) throw Error("run the analysis before adaptive rounding");
  const Allocation alloc = to_engine(allocation);
  // The analysis' calibration images first, then more of the calibration set.
  const ImageSet set = split_final_images(impl_->calibration, impl_->analysis.calibration_files,
                                          static_cast<size_t>(std::max(1, o.images)))
                           .train;
  const ImageBatch images = load_batch(set, 0, set.size(), impl_->model->config().preprocessing, 2);
  FinalModelSettings fs;
  fs.round = true;
  fs.rounding.iterations = std::max(1, o.iterations);
  fs.rounding.images = static_cast<int>(images.images.size(0));
  fs.activations.enabled = o.activation_bits > 0;
  fs.activations.bits = o.activation_bits > 0 ? o.activation_bits : 8;
  if (!impl_->cache_dir.empty()) fs.rounding_checkpoint = impl_->cache_dir + "/rounding.safetensors";
  int64_t compressed_layers = 0;
  for (int c : alloc.choice) compressed_layers += c != kKeepFloat;
  const int64_t total_steps = compressed_layers * fs.rounding.iterations;
  int64_t steps = 0;
  const auto start = std::chrono::steady_clock::now();
  fs.on_rounding_step = [&](const RoundingStep& st) {
    ++steps;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    char detail[160];
    std::snprintf(detail, sizeof detail, "layer %d/%d %s loss %.6g", st.layer_index + 1, st.layers, st.layer.c_str(),
                  st.reconstruction + st.regularizer);
    job.report({"rounding", steps, total_steps, elapsed, detail});
  };
  // round_layers' own per-layer reports would fight the per-step ones: only the other stages pass through.
  JobControl inner{[&](const Progress& p) {
                     if (p.stage != "rounding") job.report(p);
                   },
                   job.cancel};
  auto final_model = std::make_unique<FinalModel>(
      build_final_model(impl_->model_path, impl_->analysis, alloc, images.images, fs, inner));
  RoundingSummary out;
  for (const auto& l : final_model->rounding.layers) {
    ++out.layers;
    out.nearest_error += l.nearest_error;
    out.learned_error += l.learned_error;
  }
  out.seconds = final_model->rounding.seconds;
  out.warnings = final_model->rounding.warnings;
  impl_->rounded = std::move(final_model);
  impl_->rounded_choice = allocation.choice;
  return out;
}

int64_t budget_bytes_for_avg_bits(double avg_bits, int64_t params) {
  return lorq::budget_bytes_for_avg_bits(avg_bits, params);
}
int64_t budget_bytes_for_ratio(double ratio, int64_t params) { return lorq::budget_bytes_for_ratio(ratio, params); }

ImageSetInfo list_image_set(const std::string& images, const std::string& labels) {
  return describe(open_image_set(images, labels));
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
      return d;
    }
  }
  return {};
}

void init_engine() { init_threads(); }

}  // namespace lorq::api
