// Analysis › Final model… on the offscreen platform: the dialog's controls (what does not apply is disabled), the
// demo's final model (per-token A8, WADS and a few recovery steps) built as a background job and reported, the
// evaluation and export using it (the same figures as the engine's own finalize of that allocation), the budget
// moving away from it and back, the settings saved in the session file and restored on reopening (not built), and a
// cancelled build. Tests wait for signals, never for a time.
#include <QApplication>
#include <QCheckBox>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QFile>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QRadioButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTimer>
#include <QtTest>
#include <algorithm>
#include <cmath>

#include "analysed_demo.h"
#include "compare_view.h"
#include "final_settings_dialog.h"
#include "job_panel.h"
#include "job_runner.h"
#include "lorq/session/api.h"
#include "loss_plot.h"
#include "main_window.h"
#include "session_panel.h"
#include "workbench_document.h"

using namespace lorq::api;

class FinalModelTest : public QObject {
  Q_OBJECT
 private:
  QString path(const QString& name) const { return QDir(tmp_.path()).filePath(name); }

  // Per-token A8, WADS and recovery, small enough for the demo: seconds.
  static FinalSettings blocks() {
    FinalSettings s;
    s.activation_bits = 8;
    s.per_token_activations = true;
    s.wads = true;
    s.wads_steps = 3;
    s.recovery_steps = 3;
    s.recovery_lr = 1e-3;
    s.recovery_images = 24;  // the 16 calibration images and 8 more
    return s;
  }
  static bool sameTop(const std::vector<ClassScore>& a, const std::vector<ClassScore>& b) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (a[i].class_index != b[i].class_index || std::abs(a[i].probability - b[i].probability) > 1e-6) return false;
    return true;
  }
  // The modal dialog openFinalDialog shows, seen from inside its event loop; `inspect` then closes it.
  static void whenDialogOpens(std::function<void(FinalSettingsDialog*)> inspect) {
    QTimer::singleShot(0, [inspect] {
      FinalSettingsDialog* dialog = nullptr;
      for (QWidget* w : QApplication::topLevelWidgets())
        if (auto* d = qobject_cast<FinalSettingsDialog*>(w); d && d->isVisible()) dialog = d;
      QVERIFY(dialog);
      inspect(dialog);
      dialog->reject();
    });
  }

  QTemporaryDir tmp_;
  std::unique_ptr<MainWindow> w_;

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    init_engine();
    QVERIFY(tmp_.isValid());
    w_ = analysedDemoWindow(path("cache"));
    QVERIFY(w_);
    for (QSpinBox* b : w_->compareView()->findChildren<QSpinBox*>())
      if (b->prefix().startsWith("limit")) b->setValue(64);
  }

  void cleanupTestCase() { w_.reset(); }

  void dialogDisablesWhatDoesNotApply() {
    FinalSettingsDialog d(FinalSettings(), "the demo");
    QCOMPARE(d.activationBitsBox()->currentData().toInt(), 0);
    // Weights only: per-token, WADS and the static options do not apply (finalize() refuses the first two).
    QVERIFY(!d.perTokenButton()->isEnabled());
    QVERIFY(!d.wadsBox()->isEnabled());
    QVERIFY(!d.wadsStepsBox()->isEnabled());
    QVERIFY(!d.mixedPrecisionBox()->isEnabled());
    QVERIFY(!d.ridgeBox()->isEnabled());
    QVERIFY(d.refitBox()->isEnabled());
    QVERIFY(!d.recoveryLrBox()->isEnabled());  // recovery off
    QVERIFY(!d.roundIterationsBox()->isEnabled());
    // A checked WADS box under "weights only" never reaches finalize().
    d.activationBitsBox()->setCurrentIndex(d.activationBitsBox()->findData(8));
    d.wadsBox()->setChecked(true);
    d.activationBitsBox()->setCurrentIndex(d.activationBitsBox()->findData(0));
    QVERIFY(!d.settings().wads);
    QVERIFY(!d.settings().per_token_activations);

    // Static A8: mixed precision and ridge apply, refit is always done.
    d.activationBitsBox()->setCurrentIndex(d.activationBitsBox()->findData(8));
    QVERIFY(d.staticButton()->isChecked());
    QVERIFY(d.mixedPrecisionBox()->isEnabled());
    QVERIFY(d.ridgeBox()->isEnabled());
    QVERIFY(!d.refitBox()->isEnabled());
    QVERIFY(d.wadsStepsBox()->isEnabled());
    // Per token: the static options go, refit is a choice again.
    d.perTokenButton()->setChecked(true);
    QVERIFY(!d.mixedPrecisionBox()->isEnabled());
    QVERIFY(!d.ridgeBox()->isEnabled());
    QVERIFY(d.refitBox()->isEnabled());
    d.recoveryStepsBox()->setValue(5);
    QVERIFY(d.recoveryLrBox()->isEnabled());
    QVERIFY(d.recoveryImagesBox()->isEnabled());
    d.roundBox()->setChecked(true);
    QVERIFY(d.roundIterationsBox()->isEnabled());
    QVERIFY(d.keepLearnedBox()->isEnabled());

    // Every field through the controls and back.
    FinalSettings s = blocks();
    s.refit = true;
    s.round = true;
    s.round_iterations = 33;
    s.round_images = 21;
    s.round_views = 5;
    s.round_per_layer = true;
    s.keep_learned_on_cancel = true;
    s.round_checkpoint = "/tmp/kept-as-is.safetensors";
    s.activation_mp = true;
    s.ridge = false;
    d.setSettings(s);
    QVERIFY(sameFinalSettings(d.settings(), s));
    QVERIFY(d.wadsBox()->isChecked());
    QCOMPARE(d.recoveryLrBox()->value(), 1e-3);
    // With LORQ_SCREENSHOT_DIR set, the dialog as the closing note shows it (final-dialog.png). Nothing checked.
    if (const QString dir = qEnvironmentVariable("LORQ_SCREENSHOT_DIR"); !dir.isEmpty()) {
      d.setSettings(blocks());
      d.show();
      QApplication::processEvents();
      d.grab().save(QDir(dir).filePath("final-dialog.png"));
    }
  }

  void finalizeBuildsTheModelEvaluationAndExportUse() {
    WorkbenchDocument* doc = w_->state();
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::NotBuilt);
    QVERIFY(w_->sessionPanel()->finalModelLine()->text().startsWith("final model: none"));
    const AllocationResult alloc = doc->allocation();
    QSignalSpy done(w_.get(), &MainWindow::finalizeFinished);
    QVERIFY(w_->startFinalize(blocks()));
    QVERIFY(w_->jobRunning());
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);

    // What it did, in the Jobs log: stage times, WADS points and error, the recovery loss.
    const QString log = w_->jobPanel()->logText();
    QVERIFY2(log.contains("Final model (per-token A8, WADS 3 steps, recovery 3 steps"), qPrintable(log));
    QVERIFY(
        log.contains(QRegularExpression(R"(Final model built in [0-9.]+ s: wads [0-9.]+ s, .*recovery [0-9.]+ s)")));
    QVERIFY(log.contains(QRegularExpression(R"(WADS: [1-9][0-9]* points, summed weight-aware error \S+ → \S+)")));
    QVERIFY(log.contains(QRegularExpression(R"(recovery: distillation loss \S+ → \S+)")));
    QVERIFY(doc->finalSettings().has_value());
    QVERIFY(sameFinalSettings(*doc->finalSettings(), blocks()));
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Current);
    QVERIFY(doc->isModified());  // settings to save
    const QString line = w_->sessionPanel()->finalModelLine()->text();
    QVERIFY2(line.contains("per-token A8") && line.contains("built; evaluation and export use it"), qPrintable(line));

    // F6 evaluates the final model: the figures of the engine's own finalize of this allocation (the CLI's path:
    // a session of its own, the analysis from the same cache).
    QSignalSpy evaluated(w_.get(), &MainWindow::evaluationFinished);
    w_->startEvaluation();
    QVERIFY(evaluated.wait(600000));
    QCOMPARE(evaluated.takeFirst().at(0).toBool(), true);
    const ComparisonResult* shown = w_->compareView()->result();
    QVERIFY(shown && !shown->images.empty());
    auto cli = CompressionSession::open(doc->modelPath().toStdString(), doc->calibrationImages().toStdString(),
                                        doc->calibrationLabels().toStdString(), doc->settings(),
                                        doc->cacheDir().toStdString());
    cli->analyze({});
    const AllocationResult same = cli->make_allocator(doc->allConstraints())->solve(doc->budget());
    QVERIFY(same.choice == alloc.choice);
    const std::string image = shown->images.front().path;
    const std::vector<ClassScore> nearest = cli->predict(image, 5, &same);
    cli->finalize(same, blocks(), {});
    const std::vector<ClassScore> final = cli->predict(image, 5, &same);
    QVERIFY(sameTop(shown->images.front().compressed_top, final));
    QVERIFY(!sameTop(final, nearest));  // the blocks changed the model
    const EvalSummary expected = cli->evaluate_compressed(
        same, doc->evalImages().toStdString(), doc->evalLabels().toStdString(), w_->compareView()->limit(), {});
    // The recovery's images (beyond the 16 calibration images) are left out of the evaluation too.
    QCOMPARE(expected.left_out, 24);
    const std::vector<std::string> seen = w_->state()->session()->seen_images();
    QCOMPARE(seen.size(), size_t(24));
    for (const ImageComparison& c : shown->images) QVERIFY(std::find(seen.begin(), seen.end(), c.path) == seen.end());
    QCOMPARE(shown->compressed_eval.images, expected.images);
    QCOMPARE(shown->compressed_eval.metrics.size(), expected.metrics.size());
    for (size_t i = 0; i < expected.metrics.size(); ++i)
      QCOMPARE(shown->compressed_eval.metrics[i].value, expected.metrics[i].value);

    // The export is the final model's: per-token activations, WADS and recovery recorded.
    QSignalSpy exported(w_.get(), &MainWindow::exportFinished);
    QVERIFY(w_->startExport(path("export")));
    QVERIFY(exported.wait(600000));
    QCOMPARE(exported.takeFirst().at(0).toBool(), true);
    QFile config(QDir(path("export")).filePath("model/lorq-config.json"));
    QVERIFY(config.open(QIODevice::ReadOnly));
    const QString text = QString::fromUtf8(config.readAll());
    QVERIFY2(text.contains("per-token,wads,recovery=3"), qPrintable(text.left(2000)));
    QFile report(path("export/report.md"));
    QVERIFY(report.open(QIODevice::ReadOnly));
    QVERIFY(
        QString::fromUtf8(report.readAll()).contains("- Final model: per-token A8, WADS 3 steps, recovery 3 steps"));
  }

  void movingTheBudgetLeavesTheFinalModelBehind() {
    WorkbenchDocument* doc = w_->state();
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Current);
    const int64_t budget = doc->budget();
    const std::vector<int> choice = doc->allocation().choice;
    doc->setBudget(budget_bytes_for_avg_bits(3.0, doc->params()));
    QVERIFY(doc->allocation().choice != choice);
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Stale);
    QVERIFY(w_->sessionPanel()->finalModelLine()->text().contains("built for another allocation"));
    QVERIFY(w_->jobPanel()->logText().contains("was built for another allocation: evaluation and export now use"));
    doc->setBudget(budget);
    QVERIFY(doc->allocation().choice == choice);
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Current);
    QVERIFY(w_->sessionPanel()->finalModelLine()->text().contains("built; evaluation and export use it"));
  }

  void settingsAreSavedAndRestoredNotBuilt() {
    const QString file = path("final.lorq");
    QVERIFY(w_->saveSession(file));
    QFile saved(file);
    QVERIFY(saved.open(QIODevice::ReadOnly));
    const QJsonObject final = QJsonDocument::fromJson(saved.readAll()).object().value("final").toObject();
    QCOMPARE(final.value("activation_bits").toInt(), 8);
    QCOMPARE(final.value("per_token_activations").toBool(), true);
    QCOMPARE(final.value("recovery_steps").toInt(), 3);

    MainWindow reopened;
    reopened.setQuiet(true);
    QSignalSpy analyzed(&reopened, &MainWindow::analysisFinished);
    QVERIFY(reopened.openSession(file));
    QVERIFY(analyzed.wait(600000));
    QCOMPARE(analyzed.takeFirst().at(0).toBool(), true);
    WorkbenchDocument* doc = reopened.state();
    QVERIFY(doc->finalSettings().has_value());
    QVERIFY(sameFinalSettings(*doc->finalSettings(), blocks()));
    QVERIFY(!doc->isModified());
    // Restored, not re-run: the panel and the log say so.
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::NotBuilt);
    const QString line = reopened.sessionPanel()->finalModelLine()->text();
    QVERIFY2(line.contains("per-token A8, WADS 3 steps, recovery 3 steps") && line.contains("not built yet"),
             qPrintable(line));
    QVERIFY(reopened.jobPanel()->logText().contains("not built yet (Analysis › Final model…)"));
    QVERIFY(!reopened.jobRunning());
    // The dialog opens on them; F7's opens on them with adaptive rounding on.
    bool seen = false;
    whenDialogOpens([&](FinalSettingsDialog* d) { seen = sameFinalSettings(d->settings(), blocks()); });
    reopened.openFinalDialog();
    QVERIFY(seen);
    seen = false;
    whenDialogOpens([&](FinalSettingsDialog* d) {
      FinalSettings rounding = blocks();
      rounding.round = true;
      rounding.keep_learned_on_cancel = true;
      seen = sameFinalSettings(d->settings(), rounding);
    });
    reopened.openFinalDialog(true);
    QVERIFY(seen);
    QVERIFY(!reopened.jobRunning());  // Cancel in the dialog builds nothing
  }

  void cancelStopsTheBuildAndKeepsTheBuiltModel() {
    WorkbenchDocument* doc = w_->state();
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Current);
    FinalSettings endless = blocks();
    endless.wads = false;
    endless.recovery_steps = 1000000;  // ends by the cancel only
    QSignalSpy done(w_.get(), &MainWindow::finalizeFinished);
    QSignalSpy finished(w_->jobs(), &JobRunner::finished);
    QVERIFY(w_->startFinalize(endless));
    QVERIFY(w_->jobRunning());
    w_->jobs()->cancel();
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), false);
    QCOMPARE(finished.takeFirst().at(2).toString(), QString("cancelled"));
    QVERIFY(!w_->jobRunning());
    // The model built before stays what evaluation and export use; the panel says the last settings were not built.
    QCOMPARE(doc->finalState(), WorkbenchDocument::FinalState::Current);
    QVERIFY(sameFinalSettings(*doc->builtFinalSettings(), blocks()));
    QVERIFY(sameFinalSettings(*doc->finalSettings(), endless));
    QVERIFY(w_->sessionPanel()->finalModelLine()->text().contains("were not built"));
  }

  // F7's path: adaptive rounding through the dialog's finalize draws the per-layer loss curve round() draws.
  void roundingThroughFinalizeDrawsItsLossCurve() {
    FinalSettings rounding;
    rounding.round = true;
    rounding.round_iterations = 20;
    rounding.keep_learned_on_cancel = true;
    QSignalSpy done(w_.get(), &MainWindow::finalizeFinished);
    QVERIFY(w_->startFinalize(rounding));
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    int rounded = 0;
    for (int c : w_->state()->allocation().choice) rounded += c != kKeepFloat;
    // One curve segment per rounding problem: a block's layers learn together ("layers 2-5/26 blocks.0").
    const auto& segments = w_->jobPanel()->lossPlot()->segments();
    QVERIFY(segments.size() > 1 && static_cast<int>(segments.size()) < rounded);
    const QRegularExpression part(R"(^layers? \d+(-\d+)?/\d+ \S+$)");
    for (const auto& s : segments) QVERIFY2(part.match(s.name).hasMatch(), qPrintable(s.name));
    QCOMPARE(segments.back().lastStep, qint64(rounded) * 20);
    const QString log = w_->jobPanel()->logText();
    QVERIFY(log.contains(QString("adaptive rounding: %1 layers, summed reconstruction error").arg(rounded)));
    QVERIFY(
        log.contains(QRegularExpression(R"(layers \d+-\d+/\d+ \S+: loss \S+ at its first step → \S+ at its last)")));
    QVERIFY(w_->state()->session()->rounded(w_->state()->allocation()));
    QVERIFY(w_->sessionPanel()->finalModelLine()->text().contains("adaptive rounding 20 steps/block"));
  }

  void withoutAnAnalysisTheBuildIsRefused() {
    MainWindow w;
    w.setQuiet(true);
    QVERIFY(w.openDemo());
    QSignalSpy done(&w, &MainWindow::finalizeFinished);
    QVERIFY(!w.startFinalize(blocks()));
    QCOMPARE(done.count(), 1);
    QVERIFY(w.lastError().contains("analysis"));
  }

  // Settings finalize() would refuse are refused before the job, and never become the document's (a session file
  // holding them would not load).
  void impossibleSettingsAreRefused() {
    const auto before = w_->state()->finalSettings();
    FinalSettings perTokenWithoutBits;
    perTokenWithoutBits.per_token_activations = true;
    QSignalSpy done(w_.get(), &MainWindow::finalizeFinished);
    QVERIFY(!w_->startFinalize(perTokenWithoutBits));
    QCOMPARE(done.count(), 1);
    QCOMPARE(done.takeFirst().at(0).toBool(), false);
    QVERIFY(!w_->jobRunning());
    QVERIFY(w_->lastError().contains("need activation bits"));
    QVERIFY(before && sameFinalSettings(*w_->state()->finalSettings(), *before));
  }
};

QTEST_MAIN(FinalModelTest)
#include "test_final_model.moc"
