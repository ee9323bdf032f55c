#pragma once
// The workbench window: wires the shared state, the undo stack, the job runner and the views (one per file):
// session panel (left), layers table (centre), Pareto and budget (right), allocation / compare / jobs (bottom).
#include <QMainWindow>
#include <functional>
#include <memory>
#include <vector>

#include "lorq/session/api.h"

class AllocationView;
class BudgetView;
class CompareView;
class EditActions;
class JobPanel;
class JobRunner;
class LayersView;
class MethodsView;
class ParetoView;
class QDockWidget;
class QLabel;
class QMenu;
class QUndoStack;
class SessionPanel;
class WorkbenchDocument;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  // Errors go to the status bar, and to a dialog unless quiet (tests, --screenshot).
  void setQuiet(bool quiet) { quiet_ = quiet; }

  // Before work could be lost (unsaved changes, a running job): save, discard, or cancel the action.
  enum class KeepWork { Save, Discard, Cancel };
  // Asks the question (default: a message box; quiet without a prompt: discard). Tests install their own.
  using KeepWorkPrompt = std::function<KeepWork(const QString& question)>;
  void setKeepWorkPrompt(KeepWorkPrompt prompt) { keepWorkPrompt_ = std::move(prompt); }
  // The file name for saving an untitled session ("" cancels; default: a file dialog).
  using SaveNamePrompt = std::function<QString()>;
  void setSaveNamePrompt(SaveNamePrompt prompt) { saveNamePrompt_ = std::move(prompt); }
  // Asks when work would be lost by `action` ("opening another model"); true: go ahead.
  bool maybeKeepWork(const QString& action);
  // Ctrl+S: saves to the session file, asking for a name when the document is untitled.
  bool save(bool saveAs = false);

  // Loads a model folder or file as a new, untitled document (its layers show at once; the analysis runs later).
  bool openModel(const QString& path, bool quiet = false);
  bool openDemo();
  // The demo detector / segmenter (YOLOS / SegFormer in Hugging Face layout) on the multi-object scenes.
  bool openDemoDetector();
  bool openDemoSegmenter();
  // Calibration images (also the evaluation images unless others are chosen). Returns false on a bad folder.
  bool setImages(const QString& images, const QString& labels);
  void setEvalImages(const QString& images, const QString& labels);
  void setSettings(const lorq::api::AnalysisSettings& settings);
  // Where the engine caches analyses (default: the user cache folder); reopening a session loads from it.
  void setCacheDir(const QString& dir);
  QString cacheDir() const;

  bool startAnalysis();    // emits analysisFinished
  void startEvaluation();  // float vs compressed on the evaluation images; emits evaluationFinished
  bool evaluationRunning() const;
  bool jobRunning() const;
  bool startExport(const QString& dir);  // engine export + plots + report.md; emits exportFinished
  bool startExportOnnx(const QString& path);  // the current allocation as an ONNX model; emits exportFinished
  // Adaptive rounding of the current allocation (activation_bits 0: weights only); the loss curve is drawn live
  // in the Jobs dock; evaluation and export then use the rounded model. Emits roundingFinished.
  bool startRounding(int iterations, int activation_bits = 0);
  // Measured accuracy against budget: the compressed model evaluated at every budget of `avg_bits` (empty: every
  // half bit between the smallest and the largest useful budget) on the evaluation images (`limit` images, 0: all);
  // points already measured for this analysis, constraints and evaluation set are not measured again. The budget
  // plot draws the measured metric beside the predicted error. Emits sweepFinished.
  bool startSweep(std::vector<double> avg_bits = {}, int64_t limit = 0);
  JobPanel* jobPanel() const { return jobPanel_; }
  // The method comparison (lorq/session/method_comparison.h) at the document's budget, with the Methods view's
  // settings, evaluated on the evaluation images (Compare's limit); rows reach the view as each method finishes, the
  // result is kept in the document (and the session file). Implemented in main_window_methods.cpp. Emits
  // methodsFinished.
  bool startMethodComparison();
  MethodsView* methodsView() const { return methods_; }
  QDockWidget* methodsDock() const { return methodsDock_; }
  // Analysis › Final model…: the dialog preset to the document's final settings (`rounding`: adaptive rounding on,
  // as F7 opens it); Build runs startFinalize. Implemented in main_window_final.cpp.
  void openFinalDialog(bool rounding = false);
  // Both models on one image, every class: its KL, max |Δp| and Δp of each float class (`label`: its true class
  // when known, -1 otherwise). Emits predictionFinished.
  bool predictImage(const QString& path, int label = -1);
  bool saveSession(const QString& path);
  // The constraints JSON of `lorq compress --constraints` (per-layer constraints and layer groups); an import is
  // one undo step. False (and the problem reported, naming the file) on failure.
  bool exportConstraints(const QString& path);
  bool importConstraints(const QString& path);
  bool openSession(const QString& path);  // reopens and re-analyzes (instant from the cache)

  // The default dock arrangement and sizes (View > Reset layout).
  void resetLayout();

  WorkbenchDocument* state() const { return state_; }
  WorkbenchDocument* document() const { return state_; }
  SessionPanel* sessionPanel() const { return session_; }
  QDockWidget* jobsDock() const { return jobsDock_; }
  EditActions* edit() const { return edit_; }
  QUndoStack* undoStack() const { return undo_; }
  JobRunner* jobs() const { return jobs_; }
  LayersView* layersView() const { return layers_; }
  ParetoView* paretoView() const { return pareto_; }
  BudgetView* budgetView() const { return budget_; }
  AllocationView* allocationView() const { return allocation_; }
  CompareView* compareView() const { return compare_; }
  QDockWidget* compareDock() const { return compareDock_; }
  QString lastError() const { return lastError_; }

 public slots:
  // The final model of the current allocation (FinalSettings: activations, per-token, WADS, recovery, refit,
  // adaptive rounding) as a background job; the settings become the document's (saved in the session file), the Jobs
  // log says what each stage did, and evaluation and export use the model while the allocation stays. Emits
  // finalizeFinished. Implemented in main_window_final.cpp.
  bool startFinalize(const lorq::api::FinalSettings& settings);

 signals:
  void analysisFinished(bool ok);
  void evaluationFinished(bool ok);
  void exportFinished(bool ok);
  void roundingFinished(bool ok);
  void predictionFinished(bool ok);
  void sweepFinished(bool ok);
  void methodsFinished(bool ok);
  void finalizeFinished(bool ok);

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void buildDocks();
  void buildMenus();
  void report(const QString& title, const QString& message);
  void updateStatus();
  void updateTitle();
  void addRecent(const QString& key, const QString& path);
  void rebuildRecentMenu();
  void onOpenModel();
  void onChooseCalibration();
  void onChooseEval();
  void onOpenSession();
  // The one way jobs start: refuses while another runs, and emits `finished` (may be null) with the outcome.
  bool runJob(const QString& name, std::function<void(const lorq::JobControl&)> work, std::function<void()> done,
              void (MainWindow::*finished)(bool));
  bool loadModel(const QString& path, bool quiet);
  // A progressive analysis' revision, on the UI thread: the first becomes the document's session, later ones
  // refine it in place. `generation` drops revisions of a superseded analysis.
  void onAnalysisRevision(const std::shared_ptr<lorq::api::CompressionSession>& session,
                          const std::shared_ptr<const lorq::api::AnalysisRevision>& revision, int generation);
  void installAnalysis(const std::shared_ptr<lorq::api::CompressionSession>& session);
  bool loadSession(const QString& path);
  void onExport();
  void onExportOnnx();
  // The final model's line in the status bar, and a message when moving the allocation leaves it behind.
  QString finalStatusText() const;
  void onFinalStateChanged();

  WorkbenchDocument* state_;
  QUndoStack* undo_;
  EditActions* edit_;
  JobRunner* jobs_;
  SessionPanel* session_;
  LayersView* layers_;
  ParetoView* pareto_;
  BudgetView* budget_;
  AllocationView* allocation_;
  CompareView* compare_;
  MethodsView* methods_;
  QDockWidget* methodsDock_;
  JobPanel* jobPanel_;
  QDockWidget* compareDock_;
  QDockWidget* jobsDock_;
  QMenu* recentMenu_;
  QLabel* allocationStatus_;
  QByteArray defaultLayout_;

  QString lastError_;
  bool quiet_ = false;
  KeepWorkPrompt keepWorkPrompt_;
  SaveNamePrompt saveNamePrompt_;
  // Restored after the analysis of a reopened session.
  std::string pendingConstraints_;  // a session file's constraints JSON, resolved once its analysis is ready
  int64_t pendingBudget_ = 0;
  int analysisGeneration_ = 0;  // the analysis whose revisions the document takes (see onAnalysisRevision)
  int finalState_ = 0;          // the document's FinalState when last shown (see onFinalStateChanged)
};
