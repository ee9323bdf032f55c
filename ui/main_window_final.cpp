// MainWindow's final model (Analysis › Final model…, F7): the dialog, the finalize job and what the status says
// about the model evaluation and export use (kept apart from main_window.cpp, which wires the rest).
#include <QDockWidget>
#include <QRegularExpression>
#include <QStatusBar>
#include <memory>

#include "final_settings_dialog.h"
#include "format.h"
#include "job_panel.h"
#include "main_window.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {

// finalize()'s rounding reports "layer 3/26 NAME it 41/500 rec X reg Y" every 10 steps; the Jobs panel draws a loss
// curve (and logs one line per layer) from "layer 3/26 NAME loss X", as round() reports. The rounding's steps are
// counted over all layers and after the recovery's (a curve of its own before them), so the x axis only grows.
lorq::JobControl withRoundingLoss(const lorq::JobControl& job) {
  auto recoverySteps = std::make_shared<int64_t>(0);
  return {[job, recoverySteps](const lorq::Progress& p) {
            if (p.stage == "distillation") *recoverySteps = p.done;
            if (p.stage != "rounding") return job.report(p);
            // "layer 3/26 NAME it …" or, for a block's layers learned together, "layers 2-5/26 blocks.0 it …".
            static const QRegularExpression re(
                R"(^(layers? (\d+)(?:-(\d+))?/(\d+) \S+) it (\d+)/(\d+) rec (\S+) reg (\S+)$)");
            const QRegularExpressionMatch m = re.match(QString::fromStdString(p.detail));
            if (!m.hasMatch()) return;  // its per-layer reports count layers, not steps
            const int64_t layer = m.captured(2).toLongLong() - 1, layers = m.captured(4).toLongLong();
            const int64_t group = m.captured(3).isEmpty() ? 1 : m.captured(3).toLongLong() - layer;
            const int64_t step = m.captured(5).toLongLong(), steps = m.captured(6).toLongLong();
            const double loss = m.captured(7).toDouble() + m.captured(8).toDouble();
            // A group's step counts for each of its layers, so the bar ends at layers × steps either way.
            job.report({"rounding", *recoverySteps + layer * steps + group * step, *recoverySteps + layers * steps,
                        p.elapsed_s, QString("%1 loss %2").arg(m.captured(1)).arg(loss, 0, 'g', 6).toStdString()});
          },
          job.cancel};
}

}  // namespace

void MainWindow::openFinalDialog(bool rounding) {
  if (!state_->ready()) {
    report("Cannot build the final model", "run the analysis first (the final model is built from the allocation)");
    return;
  }
  FinalSettings preset = state_->finalSettings().value_or(FinalSettings());
  if (rounding) {
    preset.round = true;
    preset.keep_learned_on_cancel = true;  // F7's Cancel has always kept the learned layers
  }
  const AllocationResult& a = state_->allocation();
  const QString target = QString("the current allocation (%1, %2 average bits)")
                             .arg(formatBytes(static_cast<double>(a.bytes)))
                             .arg(8.0 * a.bytes / state_->params(), 0, 'f', 2);
  FinalSettingsDialog dialog(preset, target, this);
  if (dialog.exec() == QDialog::Accepted) {
    jobsDock_->raise();
    startFinalize(dialog.settings());
  }
}

bool MainWindow::startFinalize(const FinalSettings& settings) {
  if (!state_->ready()) {
    report("Cannot build the final model", "run the analysis first (the final model is built from the allocation)");
    emit finalizeFinished(false);
    return false;
  }
  if (const QString problem = finalSettingsProblem(settings); !problem.isEmpty()) {
    report("Cannot build the final model", problem);  // and the document keeps its settings
    emit finalizeFinished(false);
    return false;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  auto summary = std::make_shared<FinalSummary>();
  const bool started = runJob(
      "Final model",
      [=](const lorq::JobControl& job) { *summary = session->finalize(alloc, settings, withRoundingLoss(job)); },
      [this, session, alloc, settings, summary] {
        if (state_->session() != session) return;  // another analysis meanwhile: its session has no final model
        state_->setFinalBuilt(settings, alloc.choice);
        const QStringList lines = describeFinalSummary(*summary);
        jobPanel_->log("Final model (" + describeFinalSettings(settings) + "):");
        for (const QString& line : lines) jobPanel_->log("  " + line);
        statusBar()->showMessage(lines.first() + "; evaluation and export now use it", 15000);
      },
      &MainWindow::finalizeFinished);
  // The settings are the document's from here (saved with the session), built or not.
  if (started) state_->setFinalSettings(settings, true);
  return started;
}

QString MainWindow::finalStatusText() const {
  switch (state_->finalState()) {
    case WorkbenchDocument::FinalState::Current:
      return " · final model: " + describeFinalSettings(*state_->builtFinalSettings());
    case WorkbenchDocument::FinalState::Stale:
      return " · final model: built for another allocation (not used)";
    case WorkbenchDocument::FinalState::NotBuilt:
      break;
  }
  return {};
}

void MainWindow::onFinalStateChanged() {
  const int now = static_cast<int>(state_->finalState());
  const bool leftBehind = finalState_ == static_cast<int>(WorkbenchDocument::FinalState::Current) &&
                          now == static_cast<int>(WorkbenchDocument::FinalState::Stale);
  finalState_ = now;
  if (!leftBehind) return;
  const QString text =
      "The final model (" + describeFinalSettings(*state_->builtFinalSettings()) +
      ") was built for another allocation: evaluation and export now use nearest rounding, weights only "
      "(Analysis › Final model… rebuilds it; going back to that allocation uses it again)";
  jobPanel_->log(text);
  statusBar()->showMessage(text, 15000);
}
