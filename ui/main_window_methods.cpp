// MainWindow::startMethodComparison: the Methods view's job (kept apart from main_window.cpp, which wires the rest).
#include <QDockWidget>
#include <QMetaObject>
#include <QStatusBar>
#include <memory>

#include "compare_view.h"
#include "job_panel.h"
#include "main_window.h"
#include "methods_view.h"
#include "workbench_document.h"

using namespace lorq::api;

bool MainWindow::startMethodComparison() {
  if (!state_->ready()) {
    report("Cannot compare methods", "run the analysis first (the methods are compared at the document's budget)");
    emit methodsFinished(false);
    return false;
  }
  // The comparison opens a session of its own (the analysis comes from the engine cache): finalizing every method's
  // model there leaves the document's session, and what Compare evaluates, untouched.
  MethodComparisonSettings s;
  const auto session = state_->session();
  s.model_path = state_->modelPath().toStdString();
  s.calib_images = state_->calibrationImages().toStdString();
  s.calib_labels = state_->calibrationLabels().toStdString();
  s.cache_dir = state_->cacheDir().toStdString();
  s.analysis = session->settings();
  s.eval_images = state_->evalImages().toStdString();
  s.eval_labels = state_->evalLabels().toStdString();
  s.limit = compare_->limit();
  s.budget_bytes = MethodsView::comparisonBudget(*state_);
  s.act_bits = methods_->activationBits();
  s.round_iterations = methods_->roundIterations();
  s.lraqvit_steps = s.lraqvit_wads_steps = methods_->lraqvitSteps();
  if (!state_->allConstraints().empty())
    s.mlorq_constraints_json = session->constraints_to_json(state_->constraints(), state_->groups());
  auto result = std::make_shared<MethodComparison>();
  const bool started = runJob(
      MethodsView::jobName(),
      [this, s, session, result](const lorq::JobControl& job) {
        *result = run_method_comparison(s, job, [this, session](const MethodComparison& partial) {
          // Each finished row reaches the view at once; a cancelled run keeps them.
          QMetaObject::invokeMethod(
              this,
              [this, session, partial] {
                if (state_->session() == session) state_->setMethods(partial, true);
              },
              Qt::QueuedConnection);
        });
      },
      [this, session, result] {
        if (state_->session() != session) return;
        state_->setMethods(*result, true);
        jobPanel_->log("Method comparison:\n" + QString::fromStdString(result->table_text()).trimmed());
      },
      &MainWindow::methodsFinished);
  if (started) methodsDock_->raise();
  return started;
}
