#pragma once
// The workbench's document: the one owner of what the user works on — the open model, the calibration and
// evaluation image sets, the analysis settings, the analyzed session, the constraints (per-layer and layer groups),
// the budget and the allocation that follows, the session file it was saved to and the undo stack. Panels read it
// and redraw on its signals; only commands (commands.h) change constraints and budget, so undo/redo covers every
// edit. The trade-off curve is computed on a worker and cancelled when superseded.
#include <QObject>
#include <QString>
#include <QStringList>
#include <atomic>
#include <memory>
#include <optional>
#include <vector>

#include "lorq/session/api.h"
#include "lorq/session/method_comparison.h"
#include "lorq/session/sweep.h"

class QUndoStack;
template <typename T>
class QFutureWatcher;

class WorkbenchDocument : public QObject {
  Q_OBJECT
 public:
  explicit WorkbenchDocument(QObject* parent = nullptr);
  ~WorkbenchDocument() override;

  // ---- Sources and settings (what a session file records).

  // A new, untitled document on this model: analysis, constraints, groups, budget, undo history and session file
  // are dropped; image sets and settings stay (they usually suit the next model too). Emits documentReset.
  void setModel(const QString& path, const lorq::api::ModelSummary& summary);
  QString modelPath() const { return modelPath_; }
  const lorq::api::ModelSummary& model() const { return model_; }
  bool hasModel() const { return !model_.layers.empty(); }
  // Class names from the model's config.json ("label_names" or Hugging Face "id2label"); empty when it has none.
  const QStringList& classNames() const { return classNames_; }
  QString className(int index) const;  // the name, or "class N"

  // Lists the folder (no decoding); on a problem nothing changes and the problem is returned.
  QString setCalibration(const QString& images, const QString& labels);
  QString calibrationImages() const { return calibImages_; }
  QString calibrationLabels() const { return calibLabels_; }
  const lorq::api::ImageSetInfo& calibrationInfo() const { return calibInfo_; }
  // Empty images: evaluate on the calibration folder (its calibration images left out).
  void setEval(const QString& images, const QString& labels);
  QString evalImagesSetting() const { return evalImages_; }
  QString evalLabelsSetting() const { return evalLabels_; }
  QString evalImages() const;  // the folder evaluation really uses
  QString evalLabels() const;

  void setSettings(const lorq::api::AnalysisSettings& settings);
  const lorq::api::AnalysisSettings& settings() const { return settings_; }
  void setCacheDir(const QString& dir) { cacheDir_ = dir; }
  QString cacheDir() const { return cacheDir_; }

  // ---- The session file and unsaved changes.

  QString sessionPath() const { return sessionPath_; }
  bool untitled() const { return sessionPath_.isEmpty(); }
  QString displayName() const;  // the session file's name, or "untitled"
  lorq::api::SessionFile toSessionFile() const;
  // A reopened session file's constraints (JSON, pins by label) until an analysis resolves them: saving before
  // then writes them back unchanged.
  void setPendingConstraints(const std::string& json) { pendingConstraintsJson_ = json; }
  // After a save (or a load): the document is unmodified and belongs to `path`.
  void markSaved(const QString& path);
  bool isModified() const;
  QUndoStack* undoStack() const { return undo_; }

  // ---- The analysis and the allocation.

  // An analyzed session: builds the allocator under `constraints` and `groups` (dropped with a message when no
  // longer valid) and solves for `budget_bytes` (<= 0: 4 average bits). Returns the problem, or "".
  QString setSession(std::shared_ptr<lorq::api::CompressionSession> session,
                     const lorq::api::ConstraintMap& constraints, const lorq::api::LayerGroups& groups,
                     int64_t budget_bytes);
  void clearSession();
  // The session adopted a newer revision of the same analysis (a progressive analysis refining its global errors):
  // the allocator is rebuilt under the current constraints and groups and re-solved at the current budget; the
  // constraints, budget, selection and undo history stay. Emits analysisRefined. Returns the problem, or "".
  QString refreshAnalysis();
  // Where the current analysis' global errors come from (nothing before an analysis).
  lorq::api::GlobalErrorState globalErrors() const;
  const std::shared_ptr<lorq::api::CompressionSession>& session() const { return session_; }
  bool ready() const { return session_ && allocator_; }

  const std::vector<lorq::api::LayerAnalysis>& layers() const;
  int64_t params() const { return model_.compressible_params; }
  const std::shared_ptr<const lorq::api::Allocator>& allocator() const { return allocator_; }
  // The trade-off curve of the current allocator (empty until computed off the UI thread; see curveChanged).
  const std::vector<lorq::api::TradeoffPoint>& curve() const { return curve_; }
  bool curveRunning() const { return curveJobs_ > 0; }
  // Stops the curve being computed (its result is dropped; curveCancelled follows).
  void cancelCurve();

  int64_t budget() const { return budget_; }
  const lorq::api::AllocationResult& allocation() const { return allocation_; }
  const lorq::api::ConstraintMap& constraints() const { return constraints_; }
  const lorq::api::LayerGroups& groups() const { return groups_; }
  lorq::api::LayerConstraint constraint(int layer) const;
  // The group holding this layer (index into groups()), or -1.
  int groupOf(int layer) const;
  // The option chosen for a layer, or null when kept in float (or nothing is allocated).
  const lorq::api::OptionRow* chosenOption(int layer) const;
  // "Q4", "LR r=37 A6/B4", "F32" or "".
  QString choiceLabel(int layer) const;
  int layerIndex(const std::string& name) const;  // -1 when unknown

  // Solves at once (sub-millisecond) and emits allocationChanged.
  void setBudget(int64_t bytes);
  // Rebuilds the allocator and re-solves; on an impossible constraint nothing changes and the problem is returned.
  QString setConstraints(const lorq::api::ConstraintMap& constraints);
  QString setConstraints(const lorq::api::ConstraintMap& constraints, const lorq::api::LayerGroups& groups);
  // Whether these constraints are possible: "" or the problem.
  QString checkConstraints(const lorq::api::ConstraintMap& constraints,
                           const lorq::api::LayerGroups& groups = {}) const;

  int selectedLayer() const { return selected_; }
  void setSelectedLayer(int layer);

  // ---- Measured accuracy against budget (lorq/session/sweep.h): every sweep of this document, saved in the
  // session file. A series belongs to one analysis, constraints and evaluation set: only the current one is shown.
  lorq::api::Constraints allConstraints() const;  // per-layer constraints and groups, as the engine takes them
  const lorq::api::SweepCache& sweeps() const { return sweeps_; }
  void setSweeps(const lorq::api::SweepCache& sweeps);    // a reopened session's results (not a modification)
  void mergeSweep(const lorq::api::SweepSeries& series);  // new points: the document is modified
  const lorq::api::SweepSeries* currentSweep() const;     // null when none matches

  // ---- The method comparison (lorq/session/method_comparison.h): the latest one, saved in the session file.
  const lorq::api::MethodComparison& methods() const { return methods_; }
  // `modified`: new results to save (false for a reopened session's). A new comparison shows the live allocation.
  void setMethods(const lorq::api::MethodComparison& methods, bool modified);
  // The Allocation view shows one method's per-layer result instead of the live allocation (-1: the live one, also
  // after any change to the live allocation). Only rows that ran can be shown.
  void setShownMethod(int row);
  int shownMethod() const { return shownMethod_; }
  const lorq::api::MethodRow* shownMethodRow() const;

  // ---- The final model (Analysis › Final model…): the settings last applied, saved in the session file (a reopened
  // session restores them, not the model), and the allocation the session's final model was built for.
  const std::optional<lorq::api::FinalSettings>& finalSettings() const { return finalSettings_; }
  // `modified`: the user applied them (false for a reopened session's). Emits finalChanged.
  void setFinalSettings(const std::optional<lorq::api::FinalSettings>& settings, bool modified);
  // The session built its final model of `choice` (finalize() or round()): evaluation and export use it while the
  // allocation's choice is `choice`. A new analysis forgets it (its session has none). Emits finalChanged.
  void setFinalBuilt(const lorq::api::FinalSettings& settings, const std::vector<int>& choice);
  enum class FinalState { NotBuilt, Current, Stale };  // Stale: built for another allocation
  FinalState finalState() const;
  // The settings the session's final model was built with (null when none was built).
  const lorq::api::FinalSettings* builtFinalSettings() const { return builtFinal_ ? &*builtFinal_ : nullptr; }

 signals:
  void documentReset();  // a new model: views drop what they showed (results, plots, axes)
  void modelChanged();
  void sourcesChanged();  // image sets or settings
  void sessionChanged();  // a new analysis (layers and options)
  void analysisRefined();  // the same analysis with refined global errors (same layers and options)
  void constraintsChanged();
  void allocationChanged();  // budget or choice
  void curveChanged();
  void curveCancelled();
  void selectedLayerChanged(int layer);
  void modifiedChanged(bool modified);
  void sweepsChanged();
  void methodsChanged();
  void shownMethodChanged();
  void sessionPathChanged();
  void finalChanged();  // the final settings or the built final model (allocation moves: see allocationChanged)

 private:
  void resolve();
  void computeCurve();
  void setSourcesModified(bool modified);
  void forgetFinalModel();  // the session that built it is gone

  QString modelPath_, calibImages_, calibLabels_, evalImages_, evalLabels_, cacheDir_, sessionPath_;
  lorq::api::ImageSetInfo calibInfo_;
  QStringList classNames_;
  lorq::api::AnalysisSettings settings_;
  bool sourcesModified_ = false;  // images or settings changed since the last save
  QUndoStack* undo_;

  lorq::api::ModelSummary model_;
  std::shared_ptr<lorq::api::CompressionSession> session_;
  std::shared_ptr<const lorq::api::Allocator> allocator_;
  lorq::api::ConstraintMap constraints_;
  lorq::api::LayerGroups groups_;
  std::string pendingConstraintsJson_;
  lorq::api::AllocationResult allocation_;
  std::vector<lorq::api::TradeoffPoint> curve_;
  std::shared_ptr<std::atomic<bool>> curveCancel_;
  std::vector<QFutureWatcher<std::vector<lorq::api::TradeoffPoint>>*> curveWatchers_;
  int curveJobs_ = 0;
  int64_t budget_ = 0;
  int selected_ = -1;
  lorq::api::SweepCache sweeps_;
  lorq::api::MethodComparison methods_;
  int shownMethod_ = -1;
  std::optional<lorq::api::FinalSettings> finalSettings_, builtFinal_;
  std::vector<int> builtFinalChoice_;
};

// Settings equality (AnalysisSettings has no operator==).
bool sameSettings(const lorq::api::AnalysisSettings& a, const lorq::api::AnalysisSettings& b);
// The layers whose name matches a wildcard pattern ("*.attn.qkv", "blocks.1?.mlp.*"), in network order.
std::vector<int> layersMatching(const WorkbenchDocument& document, const QString& pattern);
