#pragma once
// The method comparison (lorq/session/method_comparison.h) in the workbench: at the document's budget, uniform
// per-row quantization, MLoRQ (nearest and adaptive rounding), LRA-QViT and MLoRQ with the LRA-QViT blocks, run as
// one background job (Run / Cancel, progress per method), shown as the table `lorq compare-methods` prints and as a
// bar chart of the task metric per method with the float model as a reference line. Selecting a row shows that
// method's per-layer allocation in the Allocation view. The results live in the document (saved with the session);
// the window runs the job (MainWindow::startMethodComparison) when the view asks.
#include <QWidget>

#include "lorq/session/method_comparison.h"

class JobRunner;
class QCPBars;
class QCPItemStraightLine;
class QCPItemText;
class QComboBox;
class QCustomPlot;
class QLabel;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableWidget;
class WorkbenchDocument;

class MethodsView : public QWidget {
  Q_OBJECT
 public:
  MethodsView(WorkbenchDocument* document, JobRunner* jobs, QWidget* parent = nullptr);

  // The job's name in the job runner (the view follows only its own job's progress).
  static QString jobName() { return QStringLiteral("Method comparison"); }
  // The budget the comparison runs at: the document's, clamped into its allocator's range as the live allocation
  // is (0 before an analysis).
  static int64_t comparisonBudget(const WorkbenchDocument& document);
  // The run's settings from the view's controls (activation bits, rounding iterations, LRA-QViT steps); the
  // window adds the document's model, images, analysis settings, budget and constraints.
  int activationBits() const;
  int roundIterations() const;
  int lraqvitSteps() const;

  QTableWidget* table() const { return table_; }
  QCustomPlot* plot() const { return plot_; }
  QCPBars* bars() const { return bars_; }
  QCPItemStraightLine* floatLine() const { return floatLine_; }
  QPushButton* runButton() const { return run_; }
  QPushButton* cancelButton() const { return cancel_; }
  QLabel* stateLabel() const { return state_; }
  QComboBox* activationBox() const { return actBits_; }
  QSpinBox* roundIterationsBox() const { return roundIters_; }
  QSpinBox* lraqvitStepsBox() const { return lraSteps_; }

 signals:
  void runRequested();
  void methodShown(int row);  // a row was selected and its allocation is in the Allocation view

 private:
  void updateControls();
  void updateResults();
  void onSelectionChanged();
  void onStarted(const QString& name);
  void onProgress(const QString& stage, qint64 done, qint64 total, double elapsed, const QString& detail);
  void onFinished(const QString& name, bool ok, const QString& error);

  WorkbenchDocument* document_;
  JobRunner* jobs_;
  QComboBox* actBits_;
  QSpinBox* roundIters_;
  QSpinBox* lraSteps_;
  QPushButton* run_;
  QPushButton* cancel_;
  QProgressBar* progress_;
  QLabel* budget_;
  QLabel* state_;
  QTableWidget* table_;
  QCustomPlot* plot_;
  QCPBars* bars_;
  QCPItemStraightLine* floatLine_;
  QCPItemText* floatLabel_;
  bool busy_ = false;     // a job runs (from the runner's started signal to its finished one)
  bool ownJob_ = false;   // the running job is this view's comparison
  bool filling_ = false;  // the table is being refilled (selection signals are not the user's)
  QString methodText_;    // "method 2/5 mlorq-rounded" while it runs
};
