#include "job_panel.h"

#include <QDateTime>
#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QVBoxLayout>
#include <cmath>

#include "job_runner.h"
#include "loss_plot.h"

namespace {
QString duration(double s) {
  if (s < 60) return QString("%1 s").arg(s, 0, 'f', 1);
  return QString("%1 min %2 s").arg(static_cast<int>(s) / 60).arg(static_cast<int>(s) % 60);
}
}  // namespace

JobPanel::JobPanel(JobRunner* runner, QWidget* parent) : QWidget(parent), runner_(runner) {
  auto* layout = new QVBoxLayout(this);
  auto* row = new QHBoxLayout();
  stage_ = new QLabel("No job running", this);
  timing_ = new QLabel(this);
  bar_ = new QProgressBar(this);
  bar_->setRange(0, 1);
  bar_->setValue(0);
  cancel_ = new QPushButton("Cancel", this);
  cancel_->setEnabled(false);
  cancel_->setToolTip("Stop the running job at its next safe point (completed analysis stages stay cached)");
  row->addWidget(stage_);
  row->addWidget(bar_, 1);
  row->addWidget(timing_);
  row->addWidget(cancel_);
  overallLabel_ = new QLabel(this);
  overall_ = new QProgressBar(this);
  overall_->setRange(0, 1000);
  overall_->setTextVisible(false);
  auto* overallRow = new QHBoxLayout();
  overallRow->addWidget(overallLabel_);
  overallRow->addWidget(overall_, 1);
  overallLabel_->hide();
  overall_->hide();
  layout->addLayout(overallRow);
  layout->addLayout(row);
  log_ = new QPlainTextEdit(this);
  log_->setReadOnly(true);
  log_->setMaximumBlockCount(5000);
  log_->setPlaceholderText("Job log");
  loss_ = new LossPlot(this);
  auto* body = new QHBoxLayout();
  body->addWidget(log_, 2);
  body->addWidget(loss_, 1);
  layout->addLayout(body, 1);

  connect(cancel_, &QPushButton::clicked, runner_, &JobRunner::cancel);
  connect(runner_, &JobRunner::started, this, &JobPanel::onStarted);
  connect(runner_, &JobRunner::progress, this, &JobPanel::onProgress);
  connect(runner_, &JobRunner::finished, this, &JobPanel::onFinished);
}

void JobPanel::log(const QString& line) {
  log_->appendPlainText(QDateTime::currentDateTime().toString("hh:mm:ss  ") + line);
}

QString JobPanel::logText() const { return log_->toPlainText(); }

void JobPanel::setStagePlan(const QString& job, std::vector<lorq::StageCost> plan) {
  planJob_ = job;
  plan_ = lorq::StagedProgress(std::move(plan));
}

QString JobPanel::overallText() const { return overall_->isVisible() ? overallLabel_->text() : QString(); }

void JobPanel::onStarted(const QString& name) {
  planActive_ = name == planJob_ && !plan_.plan().empty();
  if (planActive_) plan_ = lorq::StagedProgress(plan_.plan());  // a fresh run of the same plan
  overall_->setValue(0);
  overallLabel_->setText(name + " 0 %");
  overall_->setVisible(planActive_);
  overallLabel_->setVisible(planActive_);
  loggedPart_.clear();
  lastStage_.clear();
  part_ = {};
  loss_->clear();
  stage_->setText(name);
  bar_->setRange(0, 0);  // busy until the first progress report
  timing_->clear();
  cancel_->setEnabled(true);
  log("started: " + name);
}

void JobPanel::onProgress(const QString& stage, qint64 done, qint64 total, double elapsed, const QString& detail) {
  if (stage != lastStage_) {
    log("stage: " + stage);
    lastStage_ = stage;
  }
  stage_->setText(stage);
  if (total > 0) {
    bar_->setRange(0, static_cast<int>(total));
    bar_->setValue(static_cast<int>(done));
  }
  QString t = "elapsed " + duration(elapsed);
  if (total > 0 && done > 0 && done < total) t += ", ETA " + duration(elapsed * (total - done) / done);
  timing_->setText(t);
  if (planActive_ && plan_.update({stage.toStdString(), done, total, elapsed, ""})) {
    const double eta = plan_.eta_seconds();
    overall_->setValue(static_cast<int>(std::lround(1000 * plan_.fraction())));
    overallLabel_->setText(QString("%1 %2 %%3")
                               .arg(runner_->currentJob())
                               .arg(static_cast<int>(100 * plan_.fraction()))
                               .arg(eta >= 0 ? ", ETA " + duration(eta) : QString()));
  }
  const QString part = QString::fromStdString(progressPart(detail.toStdString()));
  if (loss_->addFromDetail(stage, done, detail)) {
    // One log line per part (a rounded layer): its loss when it started and when it ended.
    if (part != part_.name) {
      logPart();
      part_ = {part, loss_->lastLoss(), loss_->lastLoss(), done, done};
    }
    part_.lastLoss = loss_->lastLoss();
    part_.lastStep = done;
  } else if (!part.isEmpty()) {
    // One line per part of a stage (a layer's global errors), whatever the throttling let through.
    if (part != loggedPart_) log(QString("%1 %2").arg(stage, detail));
    loggedPart_ = part;
  } else if (done == total && !detail.isEmpty()) {
    log(QString("%1 %2/%3 %4").arg(stage).arg(done).arg(total).arg(detail));
  }
}

void JobPanel::logPart() {
  if (part_.name.isEmpty()) return;
  log(QString("%1: loss %2 at its first step → %3 at its last")
          .arg(part_.name)
          .arg(part_.firstLoss, 0, 'g', 4)
          .arg(part_.lastLoss, 0, 'g', 4));
  part_ = {};
}

void JobPanel::onFinished(const QString& name, bool ok, const QString& error, double seconds) {
  logPart();
  if (planActive_ && ok) {
    overall_->setValue(1000);
    overallLabel_->setText(name + " 100 %");
  }
  planActive_ = false;
  cancel_->setEnabled(false);
  bar_->setRange(0, 1);
  bar_->setValue(ok ? 1 : 0);
  stage_->setText(ok ? name + " done" : name + (error == "cancelled" ? " cancelled" : " failed"));
  timing_->setText(duration(seconds));
  log(ok ? QString("finished: %1 in %2").arg(name, duration(seconds))
         : QString("%1: %2").arg(name, error == "cancelled" ? QString("cancelled") : "failed: " + error));
}
