#pragma once
// The jobs dock: the running job's stage, progress, elapsed time and ETA, Cancel, a live log, and a loss-curve
// plot fed by Progress.detail ("loss 0.41"), ready for the adaptive-rounding job.
#include <QWidget>
#include <vector>

#include "lorq/common/stage_progress.h"

class JobRunner;
class LossPlot;
class QLabel;
class QPlainTextEdit;
class QProgressBar;
class QPushButton;

class JobPanel : public QWidget {
  Q_OBJECT
 public:
  JobPanel(JobRunner* runner, QWidget* parent = nullptr);
  void log(const QString& line);
  QString logText() const;
  LossPlot* lossPlot() const { return loss_; }
  // When the job `job` next starts, one more bar shows the whole job's progress and ETA, its stages weighted by
  // their expected cost (the analysis; lorq/session/analysis_progress.h), above the running stage's own bar.
  void setStagePlan(const QString& job, std::vector<lorq::StageCost> plan);
  QProgressBar* overallBar() const { return overall_; }
  QString overallText() const;

 private:
  void onStarted(const QString& name);
  void onProgress(const QString& stage, qint64 done, qint64 total, double elapsed, const QString& detail);
  void onFinished(const QString& name, bool ok, const QString& error, double seconds);

  JobRunner* runner_;
  QLabel* stage_;
  QLabel* timing_;
  QProgressBar* bar_;
  QPushButton* cancel_;
  QProgressBar* overall_;
  QLabel* overallLabel_;
  QString planJob_;
  lorq::StagedProgress plan_;
  bool planActive_ = false;
  QString loggedPart_;  // the last "layer i/n NAME" part logged (one line per layer)
  QPlainTextEdit* log_;
  LossPlot* loss_;
  void logPart();

  QString lastStage_;
  struct Part {
    QString name;
    double firstLoss = 0, lastLoss = 0;
    qint64 firstStep = 0, lastStep = 0;
  } part_;
};
