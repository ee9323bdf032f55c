#pragma once
// The workbench's main window: the loaded model's layers and an evaluation job on the chosen images.
#include <QFutureWatcher>
#include <QMainWindow>
#include <atomic>
#include <memory>

#include "lorq/api.h"

class QLabel;
class QProgressBar;
class QPushButton;
class QTableWidget;

class MainWindow : public QMainWindow {
  Q_OBJECT
 public:
  explicit MainWindow(QWidget* parent = nullptr);
  ~MainWindow() override;

  // Loads a model folder or file; errors go to a dialog (or the status bar when `quiet`).
  bool openModel(const QString& path, bool quiet = false);
  void setImages(const QString& images, const QString& labels);
  void startEvaluation();
  bool evaluationRunning() const;

 signals:
  void evaluationFinished(bool ok);
  void progressChanged(qint64 done, qint64 total);

 protected:
  void closeEvent(QCloseEvent* event) override;

 private:
  void onOpenModel();
  void onOpenImages();
  void onEvaluationDone();

  std::shared_ptr<lorq::api::ModelHandle> model_;
  QString images_, labels_;
  QLabel* modelLabel_;
  QLabel* resultLabel_;
  QTableWidget* layers_;
  QProgressBar* progress_;
  QPushButton* evalButton_;
  QPushButton* cancelButton_;
  QFutureWatcher<lorq::api::EvalSummary>* watcher_;
  std::atomic<bool> cancel_{false};
  QString lastError_;
};
