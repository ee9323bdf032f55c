#include "workbench_document.h"

#include <QDir>
#include <QFile>
#include <QFileInfo>
#include <QFutureWatcher>
#include <QJsonArray>
#include <QJsonDocument>
#include <QJsonObject>
#include <QRegularExpression>
#include <QUndoStack>
#include <QtConcurrent>
#include <algorithm>

using namespace lorq::api;

namespace {

// Budgets at which the curve is sampled: every sample is an exact optimum (one solve, well under a millisecond),
// and the cancel flag is checked between solves, so a superseded curve stops within one solve.
constexpr int kCurveSamples = 400;

std::vector<TradeoffPoint> sampledCurve(const Allocator& allocator, const std::atomic<bool>& cancel) {
  std::vector<TradeoffPoint> out;
  const int64_t lo = allocator.min_bytes(), hi = allocator.max_bytes();
  for (int i = 0; i <= kCurveSamples; ++i) {
    if (cancel.load(std::memory_order_relaxed)) return {};
    const int64_t budget = lo + static_cast<int64_t>((static_cast<double>(hi - lo) * i) / kCurveSamples);
    const AllocationResult r = allocator.solve(budget);
    if (!out.empty() && out.back().bytes == r.bytes) continue;
    out.push_back({r.bytes, r.predicted_error});
  }
  std::sort(out.begin(), out.end(), [](const TradeoffPoint& a, const TradeoffPoint& b) { return a.bytes < b.bytes; });
  return out;
}

// The names the engine's predictions carry, read for the classes that are in no top-k list (an image's true class).
QStringList readClassNames(const QString& modelPath) {
  const QFileInfo info(modelPath);
  QFile file(QDir(info.isDir() ? modelPath : info.absolutePath()).filePath("config.json"));
  if (!file.open(QIODevice::ReadOnly)) return {};
  const QJsonObject config = QJsonDocument::fromJson(file.readAll()).object();
  QStringList names;
  for (const QJsonValue& v : config.value("label_names").toArray()) names << v.toString();
  if (names.isEmpty()) {
    const QJsonObject id2label = config.value("id2label").toObject();
    for (auto it = id2label.begin(); it != id2label.end(); ++it) {
      bool ok = false;
      const int index = it.key().toInt(&ok);
      if (!ok || index < 0 || index > 1000000) continue;
      while (names.size() <= index) names << QString();
      names[index] = it.value().toString();
    }
  }
  return names;
}

}  // namespace

bool sameSettings(const AnalysisSettings& a, const AnalysisSettings& b) {
  return a.calibration_images == b.calibration_images && a.lfh_images == b.lfh_images &&
         a.projections == b.projections && a.anchors == b.anchors && a.estimate == b.estimate && a.seed == b.seed &&
         a.calibrated_errors == b.calibrated_errors && a.quantizer == b.quantizer && a.gptq_images == b.gptq_images &&
         a.gptq_damping == b.gptq_damping;
}

WorkbenchDocument::WorkbenchDocument(QObject* parent) : QObject(parent) {
  undo_ = new QUndoStack(this);
  connect(undo_, &QUndoStack::cleanChanged, this, [this] { emit modifiedChanged(isModified()); });
  // A method's allocation is a look at a result: editing the live allocation shows the live one again.
  connect(this, &WorkbenchDocument::allocationChanged, this, [this] { setShownMethod(-1); });
}

WorkbenchDocument::~WorkbenchDocument() {
  cancelCurve();
  for (auto* w : curveWatchers_) w->waitForFinished();
}

// ---- Sources and settings

void WorkbenchDocument::setModel(const QString& path, const ModelSummary& summary) {
  cancelCurve();
  clearSession();
  undo_->clear();
  modelPath_ = path;
  model_ = summary;
  classNames_ = readClassNames(path);
  selected_ = -1;
  budget_ = 0;
  sessionPath_.clear();
  sourcesModified_ = false;
  sweeps_ = {};
  methods_ = {};
  shownMethod_ = -1;
  finalSettings_.reset();
  emit documentReset();
  emit modelChanged();
  emit sessionPathChanged();
  emit modifiedChanged(isModified());
}

QString WorkbenchDocument::className(int index) const {
  if (index >= 0 && index < classNames_.size() && !classNames_[index].isEmpty()) return classNames_[index];
  return QString("class %1").arg(index);
}

QString WorkbenchDocument::setCalibration(const QString& images, const QString& labels) {
  ImageSetInfo info;
  try {
    info = list_image_set(images.toStdString(), labels.toStdString(), model_.task);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  const bool changed = images != calibImages_ || labels != calibLabels_;
  calibImages_ = images;
  calibLabels_ = labels;
  calibInfo_ = std::move(info);
  if (changed && hasModel()) setSourcesModified(true);
  emit sourcesChanged();
  return {};
}

void WorkbenchDocument::setEval(const QString& images, const QString& labels) {
  if (images == evalImages_ && labels == evalLabels_) return;
  evalImages_ = images;
  evalLabels_ = labels;
  if (hasModel()) setSourcesModified(true);
  emit sourcesChanged();
}

QString WorkbenchDocument::evalImages() const { return evalImages_.isEmpty() ? calibImages_ : evalImages_; }

QString WorkbenchDocument::evalLabels() const {
  return evalImages_.isEmpty() && evalLabels_.isEmpty() ? calibLabels_ : evalLabels_;
}

void WorkbenchDocument::setSettings(const AnalysisSettings& settings) {
  if (sameSettings(settings, settings_)) return;
  settings_ = settings;
  if (hasModel()) setSourcesModified(true);
  emit sourcesChanged();
}

// ---- Session file

QString WorkbenchDocument::displayName() const {
  return untitled() ? QStringLiteral("untitled") : QFileInfo(sessionPath_).fileName();
}

SessionFile WorkbenchDocument::toSessionFile() const {
  SessionFile f;
  f.model_path = modelPath_.toStdString();
  f.images = calibImages_.toStdString();
  f.labels = calibLabels_.toStdString();
  f.eval_images = evalImages_.toStdString();
  f.eval_labels = evalLabels_.toStdString();
  f.cache_dir = cacheDir_.toStdString();
  f.settings = settings_;
  f.budget_bytes = ready() ? budget_ : 0;
  f.sweeps_json = sweeps_.to_json();
  f.methods_json = methods_.to_json();
  f.final_settings = finalSettings_;
  f.global_errors = globalErrors();
  if (ready())
    f.constraints_json = session_->constraints_to_json(constraints_, groups_);
  else
    f.constraints_json = pendingConstraintsJson_;
  return f;
}

void WorkbenchDocument::markSaved(const QString& path) {
  const bool renamed = path != sessionPath_;
  sessionPath_ = path;
  sourcesModified_ = false;
  undo_->setClean();
  if (renamed) emit sessionPathChanged();
  emit modifiedChanged(isModified());
}

// Choosing a model, images and settings for a new untitled document is not yet work worth a question; once it
// was analyzed or saved, a changed source is.
bool WorkbenchDocument::isModified() const {
  return !undo_->isClean() || (sourcesModified_ && (!untitled() || session_));
}

void WorkbenchDocument::setSourcesModified(bool modified) {
  if (sourcesModified_ == modified) return;
  sourcesModified_ = modified;
  emit modifiedChanged(isModified());
}

// ---- Analysis and allocation

QString WorkbenchDocument::setSession(std::shared_ptr<CompressionSession> session, const ConstraintMap& constraints,
                                      const LayerGroups& groups, int64_t budget_bytes) {
  // Edits refer to the previous analysis' options, so the history goes; unsaved edits stay unsaved.
  if (!undo_->isClean()) sourcesModified_ = true;
  undo_->clear();
  if (session != session_) forgetFinalModel();
  session_ = std::move(session);
  model_ = session_->model();
  QString problem;
  try {
    allocator_ = session_->make_allocator(constraints, groups);
    constraints_ = constraints;
    groups_ = groups;
  } catch (const std::exception& e) {
    problem = QString("Constraints dropped: %1").arg(e.what());
    allocator_ = session_->make_allocator(lorq::api::Constraints{});
    constraints_.clear();
    groups_.clear();
  }
  budget_ = budget_bytes > 0 ? budget_bytes : budget_bytes_for_avg_bits(4.0, params());
  resolve();
  computeCurve();
  emit modelChanged();
  emit sessionChanged();
  emit constraintsChanged();
  emit allocationChanged();
  emit modifiedChanged(isModified());
  return problem;
}

void WorkbenchDocument::clearSession() {
  cancelCurve();
  forgetFinalModel();
  session_.reset();
  allocator_.reset();
  constraints_.clear();
  groups_.clear();
  allocation_ = {};
  curve_.clear();
  emit sessionChanged();
  emit constraintsChanged();
  emit allocationChanged();
  emit curveChanged();
}

QString WorkbenchDocument::refreshAnalysis() {
  if (!session_) return "No analysis yet";
  try {
    // Only the errors changed: constraints valid before stay valid (they name options, not errors).
    allocator_ = session_->make_allocator(constraints_, groups_);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  resolve();
  computeCurve();
  emit analysisRefined();
  emit allocationChanged();
  return {};
}

GlobalErrorState WorkbenchDocument::globalErrors() const {
  return session_ ? session_->global_errors() : GlobalErrorState{};
}

const std::vector<LayerAnalysis>& WorkbenchDocument::layers() const {
  static const std::vector<LayerAnalysis> none;
  return session_ ? session_->layers() : none;
}

LayerConstraint WorkbenchDocument::constraint(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(model_.layers.size())) return {};
  auto it = constraints_.find(model_.layers[layer].name);
  return it == constraints_.end() ? LayerConstraint() : it->second;
}

int WorkbenchDocument::groupOf(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(model_.layers.size())) return -1;
  const std::string& name = model_.layers[layer].name;
  for (size_t g = 0; g < groups_.size(); ++g)
    if (std::find(groups_[g].begin(), groups_[g].end(), name) != groups_[g].end()) return static_cast<int>(g);
  return -1;
}

int WorkbenchDocument::layerIndex(const std::string& name) const {
  for (size_t i = 0; i < model_.layers.size(); ++i)
    if (model_.layers[i].name == name) return static_cast<int>(i);
  return -1;
}

const OptionRow* WorkbenchDocument::chosenOption(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(allocation_.choice.size())) return nullptr;
  const int c = allocation_.choice[layer];
  return c == kKeepFloat ? nullptr : &layers()[layer].options[c];
}

QString WorkbenchDocument::choiceLabel(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(allocation_.choice.size())) return {};
  const OptionRow* o = chosenOption(layer);
  return o ? QString::fromStdString(o->label) : QString("F32");
}

void WorkbenchDocument::setBudget(int64_t bytes) {
  budget_ = bytes;
  resolve();
  emit allocationChanged();
}

QString WorkbenchDocument::checkConstraints(const ConstraintMap& constraints, const LayerGroups& groups) const {
  if (!session_) return "No analysis yet";
  try {
    session_->make_allocator(constraints, groups);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  return {};
}

QString WorkbenchDocument::setConstraints(const ConstraintMap& constraints) {
  return setConstraints(constraints, groups_);
}

QString WorkbenchDocument::setConstraints(const ConstraintMap& constraints, const LayerGroups& groups) {
  if (!session_) return "No analysis yet";
  try {
    allocator_ = session_->make_allocator(constraints, groups);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  constraints_ = constraints;
  groups_ = groups;
  resolve();
  computeCurve();
  emit constraintsChanged();
  emit allocationChanged();
  return {};
}

void WorkbenchDocument::setSelectedLayer(int layer) {
  if (layer == selected_) return;
  selected_ = layer;
  emit selectedLayerChanged(layer);
}

void WorkbenchDocument::resolve() {
  if (!allocator_) return;
  allocation_ = allocator_->solve(budget_);  // clamps into [min, max]
}

void WorkbenchDocument::cancelCurve() {
  if (curveCancel_) curveCancel_->store(true);
  curveCancel_.reset();
}

// The curve of an allocator can take a noticeable time on a big model: it is computed on a worker so that
// constraint edits never stall the UI; a newer allocator cancels the older computation instead of waiting for it.
void WorkbenchDocument::computeCurve() {
  cancelCurve();
  curve_.clear();
  emit curveChanged();
  if (!allocator_) return;
  auto allocator = allocator_;
  auto cancel = std::make_shared<std::atomic<bool>>(false);
  curveCancel_ = cancel;
  auto* watcher = new QFutureWatcher<std::vector<TradeoffPoint>>(this);
  curveWatchers_.push_back(watcher);
  ++curveJobs_;
  connect(watcher, &QFutureWatcherBase::finished, this, [this, watcher, cancel] {
    curveWatchers_.erase(std::find(curveWatchers_.begin(), curveWatchers_.end(), watcher));
    watcher->deleteLater();
    --curveJobs_;
    if (cancel->load()) {
      emit curveCancelled();
      return;
    }
    curveCancel_.reset();
    curve_ = watcher->result();
    emit curveChanged();
  });
  watcher->setFuture(QtConcurrent::run([allocator, cancel] { return sampledCurve(*allocator, *cancel); }));
}

std::vector<int> layersMatching(const WorkbenchDocument& document, const QString& pattern) {
  std::vector<int> out;
  if (pattern.trimmed().isEmpty()) return out;
  const QRegularExpression re(QRegularExpression::wildcardToRegularExpression(pattern.trimmed()));
  const auto& layers = document.model().layers;
  for (size_t i = 0; i < layers.size(); ++i)
    if (re.match(QString::fromStdString(layers[i].name)).hasMatch()) out.push_back(static_cast<int>(i));
  return out;
}

// ---- Measured accuracy against budget

Constraints WorkbenchDocument::allConstraints() const {
  Constraints c;
  for (const auto& [layer, k] : constraints_)
    if (!k.empty()) c.layers[layer] = k;
  c.groups = groups_;
  return c;
}

void WorkbenchDocument::setSweeps(const SweepCache& sweeps) {
  sweeps_ = sweeps;
  emit sweepsChanged();
}

void WorkbenchDocument::mergeSweep(const SweepSeries& series) {
  sweeps_.merge(series);
  setSourcesModified(true);
  emit sweepsChanged();
}

const SweepSeries* WorkbenchDocument::currentSweep() const {
  if (!ready() || sweeps_.empty()) return nullptr;
  const Constraints c = allConstraints();
  const std::string images = evalImages().toStdString(), labels = evalLabels().toStdString();
  for (const SweepSeries& s : sweeps_.series())
    if (s.key == sweep_key(*session_, c, images, labels, s.limit)) return &s;
  return nullptr;
}

// ---- The method comparison

void WorkbenchDocument::setMethods(const MethodComparison& methods, bool modified) {
  setShownMethod(-1);
  methods_ = methods;
  if (modified) setSourcesModified(true);
  emit methodsChanged();
}

void WorkbenchDocument::setShownMethod(int row) {
  if (row >= 0 && (row >= static_cast<int>(methods_.rows.size()) || !methods_.rows[row].ran)) row = -1;
  if (row == shownMethod_) return;
  shownMethod_ = row;
  emit shownMethodChanged();
}

const MethodRow* WorkbenchDocument::shownMethodRow() const {
  return shownMethod_ >= 0 && shownMethod_ < static_cast<int>(methods_.rows.size()) ? &methods_.rows[shownMethod_]
                                                                                    : nullptr;
}

// ---- The final model

void WorkbenchDocument::setFinalSettings(const std::optional<FinalSettings>& settings, bool modified) {
  finalSettings_ = settings;
  if (modified) setSourcesModified(true);
  emit finalChanged();
}

void WorkbenchDocument::setFinalBuilt(const FinalSettings& settings, const std::vector<int>& choice) {
  builtFinal_ = settings;
  builtFinalChoice_ = choice;
  emit finalChanged();
}

void WorkbenchDocument::forgetFinalModel() {
  if (!builtFinal_) return;
  builtFinal_.reset();
  builtFinalChoice_.clear();
  emit finalChanged();
}

WorkbenchDocument::FinalState WorkbenchDocument::finalState() const {
  if (!builtFinal_ || !ready()) return FinalState::NotBuilt;
  return allocation_.choice == builtFinalChoice_ ? FinalState::Current : FinalState::Stale;
}
