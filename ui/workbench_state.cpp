#include "workbench_state.h"

#include <QtConcurrent>

using namespace lorq::api;

WorkbenchState::WorkbenchState(QObject* parent) : QObject(parent) {
  curveWatcher_ = new QFutureWatcher<std::vector<TradeoffPoint>>(this);
  connect(curveWatcher_, &QFutureWatcherBase::finished, this, [this] {
    if (curveWatcher_->isCanceled()) return;
    curve_ = curveWatcher_->result();
    emit curveChanged();
  });
}

WorkbenchState::~WorkbenchState() { curveWatcher_->waitForFinished(); }

void WorkbenchState::setModel(const ModelSummary& summary) {
  clearSession();
  model_ = summary;
  selected_ = -1;
  emit modelChanged();
}

QString WorkbenchState::setSession(std::shared_ptr<CompressionSession> session, const ConstraintMap& constraints,
                                   int64_t budget_bytes) {
  session_ = std::move(session);
  model_ = session_->model();
  QString problem;
  try {
    allocator_ = session_->make_allocator(constraints);
    constraints_ = constraints;
  } catch (const std::exception& e) {
    problem = QString("Constraints dropped: %1").arg(e.what());
    allocator_ = session_->make_allocator(lorq::api::Constraints{});
    constraints_.clear();
  }
  budget_ = budget_bytes > 0 ? budget_bytes : budget_bytes_for_avg_bits(4.0, params());
  resolve();
  computeCurve();
  emit modelChanged();
  emit sessionChanged();
  emit constraintsChanged();
  emit allocationChanged();
  return problem;
}

void WorkbenchState::clearSession() {
  session_.reset();
  allocator_.reset();
  constraints_.clear();
  allocation_ = {};
  curve_.clear();
  emit sessionChanged();
  emit allocationChanged();
  emit curveChanged();
}

const std::vector<LayerAnalysis>& WorkbenchState::layers() const {
  static const std::vector<LayerAnalysis> none;
  return session_ ? session_->layers() : none;
}

LayerConstraint WorkbenchState::constraint(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(model_.layers.size())) return {};
  auto it = constraints_.find(model_.layers[layer].name);
  return it == constraints_.end() ? LayerConstraint() : it->second;
}

const OptionRow* WorkbenchState::chosenOption(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(allocation_.choice.size())) return nullptr;
  const int c = allocation_.choice[layer];
  return c == kKeepFloat ? nullptr : &layers()[layer].options[c];
}

QString WorkbenchState::choiceLabel(int layer) const {
  if (layer < 0 || layer >= static_cast<int>(allocation_.choice.size())) return {};
  const OptionRow* o = chosenOption(layer);
  return o ? QString::fromStdString(o->label) : QString("F32");
}

void WorkbenchState::setBudget(int64_t bytes) {
  budget_ = bytes;
  resolve();
  emit allocationChanged();
}

QString WorkbenchState::checkConstraints(const ConstraintMap& constraints) const {
  if (!session_) return "No analysis yet";
  try {
    session_->make_allocator(constraints);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  return {};
}

QString WorkbenchState::setConstraints(const ConstraintMap& constraints) {
  if (!session_) return "No analysis yet";
  try {
    allocator_ = session_->make_allocator(constraints);
  } catch (const std::exception& e) {
    return QString::fromStdString(e.what());
  }
  constraints_ = constraints;
  resolve();
  computeCurve();
  emit constraintsChanged();
  emit allocationChanged();
  return {};
}

void WorkbenchState::setSelectedLayer(int layer) {
  if (layer == selected_) return;
  selected_ = layer;
  emit selectedLayerChanged(layer);
}

void WorkbenchState::resolve() {
  if (!allocator_) return;
  allocation_ = allocator_->solve(budget_);  // clamps into [min, max]
}

// The first curve of an allocator can take a few hundred ms on a big model: computed on a worker so that
// constraint edits never stall the UI; the budget view draws it when it arrives.
void WorkbenchState::computeCurve() {
  curve_.clear();
  emit curveChanged();
  if (!allocator_) return;
  auto allocator = allocator_;
  curveWatcher_->waitForFinished();
  curveWatcher_->setFuture(QtConcurrent::run([allocator] { return allocator->tradeoff_curve(); }));
}
