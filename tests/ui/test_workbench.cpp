// The workbench on the offscreen platform: the demo analyzed with fast settings (LFH-estimated global errors, so
// the whole file stays well under two minutes), then budget moves, pins with undo, evaluation, export, session
// save/reopen from the cache, cancellation on close, and errors reported rather than fatal.
#include <qcustomplot.h>

#include <QDockWidget>
#include <QElapsedTimer>
#include <QFile>
#include <QListWidget>
#include <QSignalSpy>
#include <QSlider>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTableView>
#include <QTemporaryDir>
#include <QUndoStack>
#include <QtTest>

#include "budget_view.h"
#include "commands.h"
#include "compare_view.h"
#include "job_panel.h"
#include "job_runner.h"
#include "loss_plot.h"
#include "layers_view.h"
#include "lorq/session/api.h"
#include "main_window.h"
#include "pareto_view.h"
#include "workbench_state.h"

using namespace lorq::api;

class WorkbenchTest : public QObject {
  Q_OBJECT
 private:
  static AnalysisSettings testSettings() {
    AnalysisSettings s = AnalysisSettings::fast();
    s.estimate = true;
    return s;
  }
  QString path(const QString& name) const { return QDir(tmp_.path()).filePath(name); }

  QTemporaryDir tmp_;
  std::unique_ptr<MainWindow> w_;

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);  // QSettings and caches away from the user's
    lorq::api::init_engine();
    QVERIFY(tmp_.isValid());
    w_ = std::make_unique<MainWindow>();
    w_->setQuiet(true);
    w_->setCacheDir(path("cache"));
    QVERIFY(w_->openDemo());
    QCOMPARE(w_->layersView()->model()->rowCount(), 26);
    w_->setSettings(testSettings());
    QSignalSpy done(w_.get(), &MainWindow::analysisFinished);
    QElapsedTimer t;
    t.start();
    QVERIFY(w_->startAnalysis());
    QVERIFY(w_->jobRunning());
    QVERIFY(done.wait(180000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    qInfo("first analysis: %.1f s", t.elapsed() / 1000.0);
    QVERIFY(w_->state()->ready());
    QCOMPARE(static_cast<int>(w_->state()->layers().size()), 26);
  }

  void cleanupTestCase() { w_.reset(); }

  void badModelIsReportedNotFatal() {
    MainWindow w;
    QVERIFY(!w.openModel("/nonexistent/model-folder", true));
    QVERIFY(w.statusBar()->currentMessage().contains("/nonexistent/model-folder"));
    w.setQuiet(true);
    QVERIFY(!w.setImages("/nonexistent/images", ""));
    QVERIFY(w.lastError().contains("/nonexistent/images"));
    QVERIFY(!w.openSession(path("missing.lorq")));
    QVERIFY(w.lastError().contains("missing.lorq"));
    QVERIFY(!w.startAnalysis());  // nothing to analyze: reported, not fatal
  }

  void budgetSliderResolvesAndMergesIntoOneUndoStep() {
    WorkbenchState* s = w_->state();
    QUndoStack* undo = w_->undoStack();
    undo->clear();
    const int64_t before = s->budget();
    QSlider* slider = w_->budgetView()->slider();
    for (int v : {200, 400, 600, 800}) {
      slider->setValue(v);
      QVERIFY(s->allocation().bytes <= s->allocation().budget_bytes);
    }
    QVERIFY(s->budget() != before);
    QCOMPARE(undo->count(), 1);  // one drag, one undo step
    const double errAt800 = s->allocation().predicted_error;
    slider->setValue(100);
    QVERIFY(s->allocation().predicted_error >= errAt800);  // less memory, no less error (exact optimum)
    undo->undo();
    QCOMPARE(s->budget(), before);
    // Back to 4 bits for the following tests.
    w_->edit()->setBudget(budget_bytes_for_avg_bits(4.0, s->params()));
  }

  void pinLayerAndUndo() {
    WorkbenchState* s = w_->state();
    const int layer = 4;
    const int current = s->allocation().choice[layer];
    const auto& options = s->layers()[layer].options;
    int other = -1;  // the biggest option other than the current choice
    for (int i = 0; i < static_cast<int>(options.size()); ++i)
      if (i != current && (other < 0 || options[i].bytes > options[other].bytes)) other = i;
    QVERIFY(other >= 0);
    QVERIFY(w_->edit()->pinLayer(layer, other));
    QCOMPARE(s->constraint(layer).pinned_option, other);
    QCOMPARE(s->allocation().choice[layer], other);
    QVERIFY(s->allocation().bytes <= s->allocation().budget_bytes);
    w_->undoStack()->undo();
    QVERIFY(s->constraint(layer).empty());
    QCOMPARE(s->allocation().choice[layer], current);
    w_->undoStack()->redo();
    QCOMPARE(s->allocation().choice[layer], other);
    w_->undoStack()->undo();
  }

  void impossibleConstraintIsReportedAndNotApplied() {
    WorkbenchState* s = w_->state();
    LayerConstraint c;
    c.min_bits = 16;  // no option has 16 bits
    QVERIFY(!w_->edit()->setConstraint(0, c, "impossible"));
    QVERIFY(s->constraint(0).empty());
    QVERIFY(!w_->lastError().isEmpty());
  }

  void clickingAParetoPointPins() {
    w_->resize(1500, 950);
    w_->show();
    QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
    WorkbenchState* s = w_->state();
    s->setSelectedLayer(1);
    ParetoView* pareto = w_->paretoView();
    pareto->plot()->replot();
    const auto& options = s->layers()[1].options;
    int target = -1;
    for (int i = 0; i < static_cast<int>(options.size()); ++i)
      if (i != s->allocation().choice[1] && pareto->optionAt(pareto->optionPixel(i)) == i) target = i;
    QVERIFY(target >= 0);
    QTest::mouseClick(pareto->plot(), Qt::LeftButton, {}, pareto->optionPixel(target).toPoint());
    QCOMPARE(s->constraint(1).pinned_option, target);
    w_->undoStack()->undo();
    QVERIFY(s->constraint(1).empty());
  }

  void evaluationComparesBothModels() {
    QSignalSpy done(w_.get(), &MainWindow::evaluationFinished);
    w_->startEvaluation();
    QVERIFY(w_->evaluationRunning());
    QVERIFY(done.wait(120000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    const ComparisonResult* r = w_->compareView()->result();
    QVERIFY(r);
    QVERIFY(r->float_eval.labeled > 200);  // the 300 demo images less the 16 calibration images
    QVERIFY(r->compressed_eval.top1_pct > 50);
    QVERIFY(!r->images.empty());
    QVERIFY(r->images.front().kl >= r->images.back().kl);
    QCOMPARE(static_cast<int>(r->images.front().float_top.size()), 5);
    QVERIFY(w_->compareView()->strip()->count() > 0);
  }

  void exportWritesModelPlotsAndReport() {
    const QString dir = path("export");
    QSignalSpy done(w_.get(), &MainWindow::exportFinished);
    QVERIFY(w_->startExport(dir));
    QVERIFY(done.wait(60000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    for (const char* f : {"model/lorq-config.json", "model/compressed.safetensors", "model/config.json", "budget.png",
                          "allocation.png", "report.md"})
      QVERIFY2(QFileInfo(QDir(dir).filePath(f)).size() > 0, f);
    QFile report(QDir(dir).filePath("report.md"));
    QVERIFY(report.open(QIODevice::ReadOnly));
    const QString text = QString::fromUtf8(report.readAll());
    QVERIFY(text.contains("blocks.5.mlp.fc2"));
    QVERIFY(text.contains("Compressed: top-1"));
  }

  void roundingDrawsItsLossCurveAndExportsLearnedCodes() {
    QSignalSpy done(w_.get(), &MainWindow::roundingFinished);
    QVERIFY(w_->startRounding(20));
    QVERIFY(done.wait(300000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    QVERIFY(w_->jobPanel()->lossPlot()->points() > 0);
    QVERIFY(w_->state()->session()->rounded(w_->state()->allocation()));
    const QString dir = path("export-rounded");
    QSignalSpy exported(w_.get(), &MainWindow::exportFinished);
    QVERIFY(w_->startExport(dir));
    QVERIFY(exported.wait(60000));
    QFile config(QDir(dir).filePath("model/lorq-config.json"));
    QVERIFY(config.open(QIODevice::ReadOnly));
    QVERIFY(QString::fromUtf8(config.readAll()).contains("\"rounding\": \"learned\""));
  }

  void sessionReopensInstantlyFromTheCache() {
    WorkbenchState* s = w_->state();
    QVERIFY(w_->edit()->pinLayer(2, 0));
    w_->edit()->setBudget(budget_bytes_for_avg_bits(3.5, s->params()));
    const QString file = path("demo.lorq");
    QVERIFY(w_->saveSession(file));

    MainWindow reopened;
    reopened.setQuiet(true);
    QSignalSpy done(&reopened, &MainWindow::analysisFinished);
    QElapsedTimer t;
    t.start();
    QVERIFY(reopened.openSession(file));
    QVERIFY(done.wait(60000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    const double seconds = t.elapsed() / 1000.0;
    qInfo("session reopened in %.3f s", seconds);
    QVERIFY(seconds < 5.0);  // the analysis comes from the engine cache
    QCOMPARE(reopened.state()->budget(), s->budget());
    QCOMPARE(reopened.state()->constraint(2).pinned_option, 0);
    QCOMPARE(reopened.state()->allocation().choice, s->allocation().choice);
    w_->undoStack()->undo();
    w_->undoStack()->undo();
  }

  void closingDuringAJobCancelsCleanly() {
    QTemporaryDir cache;
    auto w = std::make_unique<MainWindow>();
    w->setQuiet(true);
    w->setCacheDir(cache.path());
    QVERIFY(w->openDemo());
    AnalysisSettings s = AnalysisSettings::fast();  // measured errors: long enough to be cancelled mid-way
    w->setSettings(s);
    QSignalSpy done(w.get(), &MainWindow::analysisFinished);
    QVERIFY(w->startAnalysis());
    QTest::qWait(1500);
    QVERIFY(w->jobRunning());
    QElapsedTimer t;
    t.start();
    w->close();  // cancels and waits for the worker
    QVERIFY(!w->jobRunning());
    qInfo("close during analysis returned in %.2f s", t.elapsed() / 1000.0);
    QVERIFY(t.elapsed() < 20000);
    w.reset();
  }
};

QTEST_MAIN(WorkbenchTest)
#include "test_workbench.moc"
