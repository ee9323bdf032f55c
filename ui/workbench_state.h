#pragma once
// The workbench's shared state: the analyzed session, the user's constraints, the budget and the allocation that
// follows from them. Every view reads it and redraws on its signals; only commands (commands.h) change it, so
// undo/redo covers every edit.
#include <QFutureWatcher>
#include <QObject>
#include <memory>
#include <vector>

#include "lorq/session/api.h"

class WorkbenchState : public QObject {
  Q_OBJECT
 public:
  explicit WorkbenchState(QObject* parent = nullptr);
  ~WorkbenchState() override;

  // The model summary alone (before any analysis): the layer table can list layers already.
  void setModel(const lorq::api::ModelSummary& summary);
  const lorq::api::ModelSummary& model() const { return model_; }
  bool hasModel() const { return !model_.layers.empty(); }

  // An analyzed session: builds the allocator under `constraints` (dropped with a message when no longer valid)
  // and solves for `budget_bytes` (<= 0: 4 average bits). Returns the problem with the constraints, or "".
  QString setSession(std::shared_ptr<lorq::api::CompressionSession> session,
                     const lorq::api::ConstraintMap& constraints, int64_t budget_bytes);
  void clearSession();
  const std::shared_ptr<lorq::api::CompressionSession>& session() const { return session_; }
  bool ready() const { return session_ && allocator_; }

  const std::vector<lorq::api::LayerAnalysis>& layers() const;
  int64_t params() const { return model_.compressible_params; }
  const std::shared_ptr<const lorq::api::Allocator>& allocator() const { return allocator_; }
  // The trade-off curve of the current allocator (empty until computed off the UI thread; see curveChanged).
  const std::vector<lorq::api::TradeoffPoint>& curve() const { return curve_; }

  int64_t budget() const { return budget_; }
  const lorq::api::AllocationResult& allocation() const { return allocation_; }
  const lorq::api::ConstraintMap& constraints() const { return constraints_; }
  lorq::api::LayerConstraint constraint(int layer) const;
  // The option chosen for a layer, or null when kept in float (or nothing is allocated).
  const lorq::api::OptionRow* chosenOption(int layer) const;
  // "Q4", "LR r=37 A6/B4", "F32" or "".
  QString choiceLabel(int layer) const;

  // Solves at once (sub-millisecond) and emits allocationChanged.
  void setBudget(int64_t bytes);
  // Rebuilds the allocator and re-solves; on an impossible constraint nothing changes and the problem is returned.
  QString setConstraints(const lorq::api::ConstraintMap& constraints);
  // Whether these constraints are possible: "" or the problem.
  QString checkConstraints(const lorq::api::ConstraintMap& constraints) const;

  int selectedLayer() const { return selected_; }
  void setSelectedLayer(int layer);

 signals:
  void modelChanged();
  void sessionChanged();  // a new analysis (layers and options)
  void constraintsChanged();
  void allocationChanged();  // budget or choice
  void curveChanged();
  void selectedLayerChanged(int layer);

 private:
  void resolve();
  void computeCurve();

  lorq::api::ModelSummary model_;
  std::shared_ptr<lorq::api::CompressionSession> session_;
  std::shared_ptr<const lorq::api::Allocator> allocator_;
  lorq::api::ConstraintMap constraints_;
  lorq::api::AllocationResult allocation_;
  std::vector<lorq::api::TradeoffPoint> curve_;
  QFutureWatcher<std::vector<lorq::api::TradeoffPoint>>* curveWatcher_;
  int64_t budget_ = 0;
  int selected_ = -1;
};
