// The Methods view on the offscreen platform: the demo analyzed with fast settings, then the method comparison run
// through the view as a background job (small settings: 20 rounding steps, 5 LRA-QViT steps, 64 evaluation
// images), its table and chart, a row's allocation shown in the Allocation view and left again, the results saved
// in the session file and shown after reopening, and a cancelled run. Tests wait for signals, never for a time.
#include <qcustomplot.h>

#include <QApplication>
#include <QComboBox>
#include <QDockWidget>
#include <QLabel>
#include <QPushButton>
#include <QSignalSpy>
#include <QSpinBox>
#include <QStandardPaths>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>

#include "allocation_view.h"
#include "analysed_demo.h"
#include "compare_view.h"
#include "job_panel.h"
#include "job_runner.h"
#include "lorq/session/api.h"
#include "lorq/session/method_comparison.h"
#include "main_window.h"
#include "methods_view.h"
#include "workbench_document.h"

using namespace lorq::api;

class MethodsViewTest : public QObject {
  Q_OBJECT
 private:
  QString path(const QString& name) const { return QDir(tmp_.path()).filePath(name); }
  // The view's table row of a document row (row 0 is the float model).
  static int tableRow(const MethodComparison& c, int row) { return row + (c.float_metrics.empty() ? 0 : 1); }
  static int rowOf(const MethodComparison& c, MethodKind kind) {
    for (size_t i = 0; i < c.rows.size(); ++i)
      if (c.rows[i].kind == kind) return static_cast<int>(i);
    return -1;
  }
  static void setSmallSettings(MainWindow* w) {
    w->methodsView()->roundIterationsBox()->setValue(20);
    w->methodsView()->lraqvitStepsBox()->setValue(5);
    for (QSpinBox* b : w->compareView()->findChildren<QSpinBox*>())
      if (b->prefix().startsWith("limit")) b->setValue(64);
  }

  // With LORQ_SCREENSHOT_DIR set, the window at laptop size with the Methods dock and then the Allocation dock
  // raised (methods.png, methods-allocation.png): the pictures of the closing note. Nothing is checked here.
  void saveScreenshots() {
    const QString dir = qEnvironmentVariable("LORQ_SCREENSHOT_DIR");
    if (dir.isEmpty()) return;
    w_->resize(1280, 760);
    w_->show();
    w_->methodsDock()->raise();
    QApplication::processEvents();
    w_->grab().save(QDir(dir).filePath("methods.png"));
    w_->findChild<QDockWidget*>("allocationDock")->raise();
    QApplication::processEvents();
    w_->grab().save(QDir(dir).filePath("methods-allocation.png"));
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
  }

  void cleanupTestCase() { w_.reset(); }

  void runFillsTheTableAndTheChart() {
    MethodsView* view = w_->methodsView();
    WorkbenchDocument* doc = w_->state();
    QVERIFY(view->runButton()->isEnabled());
    QVERIFY(!view->cancelButton()->isEnabled());
    setSmallSettings(w_.get());
    doc->setBudget(budget_bytes_for_avg_bits(3.0, doc->params()));
    const Allocation live = doc->allocation();
    QSignalSpy done(w_.get(), &MainWindow::methodsFinished);
    QSignalSpy rowsArrived(doc, &WorkbenchDocument::methodsChanged);
    view->runButton()->click();
    QVERIFY(w_->jobRunning());
    QVERIFY(!view->runButton()->isEnabled());
    QVERIFY(view->cancelButton()->isEnabled());
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);

    const MethodComparison& c = doc->methods();
    QVERIFY(c.complete);
    QCOMPARE(c.budget_bytes, MethodsView::comparisonBudget(*doc));
    QCOMPARE(c.rows.size(), all_methods().size());
    // Rows arrived one by one (after the float evaluation and after each method), then the complete result.
    QVERIFY(rowsArrived.count() >= static_cast<int>(c.rows.size()) + 1);
    QCOMPARE(view->table()->rowCount(), static_cast<int>(c.rows.size()) + 1);
    QCOMPARE(view->table()->item(0, 0)->text(), QString("float"));
    QCOMPARE(view->table()->horizontalHeaderItem(3)->text(), QString("top-1"));
    for (size_t i = 0; i < c.rows.size(); ++i) {
      const MethodRow& r = c.rows[i];
      const int t = tableRow(c, static_cast<int>(i));
      QCOMPARE(view->table()->item(t, 0)->text(), QString::fromStdString(r.method));
      if (r.ran) {
        QCOMPARE(view->table()->item(t, 1)->text(), QString::number(r.bytes));
        QVERIFY(r.bytes <= c.budget_bytes);
      } else {
        QCOMPARE(view->table()->item(t, 1)->text(), QString("-"));
      }
    }
    QCOMPARE(view->table()->item(1, 0)->text(), QString("uniform Q3 per row"));
    QVERIFY(view->table()->item(tableRow(c, rowOf(c, MethodKind::MlorqLraQvitBlocks)), 7)->text().contains("recovery"));
    // One bar per method that ran, at its compressed top-1; the float model as a dashed reference line.
    QCOMPARE(view->bars()->dataCount(), 5);
    QCOMPARE(view->bars()->data()->at(0)->value, c.rows[0].metrics[0].value);
    QVERIFY(view->floatLine()->visible());
    QCOMPARE(view->floatLine()->point1->coords().y(), c.float_metrics[0].value);
    QVERIFY(view->stateLabel()->text().contains("5 of 5 methods"));
    QVERIFY(!view->cancelButton()->isEnabled());
    QVERIFY(view->runButton()->isEnabled());
    QVERIFY(w_->jobPanel()->logText().contains("Method comparison:"));
    QVERIFY(doc->isModified());  // new results to save
    // The comparison ran on a session of its own: the live allocation did not move.
    QVERIFY(doc->allocation().choice == live.choice);
  }

  void selectingARowShowsItsAllocation() {
    MethodsView* view = w_->methodsView();
    WorkbenchDocument* doc = w_->state();
    AllocationView* alloc = w_->allocationView();
    const MethodComparison& c = doc->methods();
    QVERIFY(!c.rows.empty());
    QVERIFY(!alloc->methodBanner()->isVisibleTo(alloc));

    // Uniform Q3: every layer a 3-bit bar.
    view->table()->selectRow(tableRow(c, rowOf(c, MethodKind::Uniform)));
    QCOMPARE(doc->shownMethod(), rowOf(c, MethodKind::Uniform));
    QVERIFY(alloc->methodBanner()->isVisibleTo(alloc));
    QVERIFY(alloc->methodBanner()->text().contains("uniform Q3 per row"));
    QCOMPARE(alloc->quantBars()->dataCount(), static_cast<int>(doc->model().layers.size()));
    QCOMPARE(alloc->lowRankBars()->dataCount(), 0);
    for (int i = 0; i < alloc->quantBars()->dataCount(); ++i) QCOMPARE(alloc->quantBars()->data()->at(i)->value, 3.0);

    // LRA-QViT: qkv, fc1 and fc2 factorized, the rest at its weight bits.
    const int lra = rowOf(c, MethodKind::LraQvit);
    QVERIFY(c.rows[lra].ran);
    view->table()->selectRow(tableRow(c, lra));
    QCOMPARE(doc->shownMethod(), lra);
    QVERIFY(alloc->methodBanner()->text().contains("LRA-QViT"));
    int factorized = 0;
    for (const auto& l : doc->model().layers) {
      const QString kind = QString::fromStdString(l.name).section('.', -1);
      if (kind == "qkv" || kind == "fc1" || kind == "fc2") ++factorized;
    }
    QVERIFY(factorized > 0);
    QCOMPARE(alloc->lowRankBars()->dataCount(), factorized);
    QCOMPARE(alloc->quantBars()->dataCount() + factorized, static_cast<int>(doc->model().layers.size()));
    saveScreenshots();

    // The blocks row has MLoRQ's allocation; the float row shows nothing of its own: the live allocation is back.
    const int blocks = rowOf(c, MethodKind::MlorqLraQvitBlocks);
    QVERIFY(c.rows[blocks].ran);
    view->table()->selectRow(tableRow(c, blocks));
    QCOMPARE(doc->shownMethod(), blocks);
    QVERIFY(alloc->methodBanner()->text().contains("LRA-QViT blocks"));
    view->table()->selectRow(0);
    QCOMPARE(doc->shownMethod(), -1);
    QVERIFY(!alloc->methodBanner()->isVisibleTo(alloc));

    // Leaving by the banner's button, and by editing the live allocation.
    view->table()->selectRow(tableRow(c, lra));
    QCOMPARE(doc->shownMethod(), lra);
    alloc->backToLiveButton()->click();
    QCOMPARE(doc->shownMethod(), -1);
    QVERIFY(!alloc->methodBanner()->isVisibleTo(alloc));
    QVERIFY(view->table()->selectionModel()->selectedRows().isEmpty());
    int live = 0;
    for (int i = 0; i < static_cast<int>(doc->layers().size()); ++i)
      if (doc->chosenOption(i)) ++live;
    QCOMPARE(alloc->quantBars()->dataCount() + alloc->lowRankBars()->dataCount(), live);
    view->table()->selectRow(tableRow(c, lra));
    QCOMPARE(doc->shownMethod(), lra);
    doc->setBudget(doc->budget() + 1000);
    QCOMPARE(doc->shownMethod(), -1);
    QVERIFY(!alloc->methodBanner()->isVisibleTo(alloc));
  }

  void savedAndRestoredWithTheSession() {
    const QString file = path("methods.lorq");
    const std::string saved = w_->state()->methods().to_json();
    QVERIFY(!saved.empty());
    QVERIFY(w_->saveSession(file));
    MainWindow reopened;
    reopened.setQuiet(true);
    QSignalSpy analyzed(&reopened, &MainWindow::analysisFinished);
    QVERIFY(reopened.openSession(file));
    QVERIFY(analyzed.wait(600000));
    const MethodComparison& c = reopened.state()->methods();
    QCOMPARE(c.to_json(), saved);
    QCOMPARE(reopened.methodsView()->table()->rowCount(), static_cast<int>(c.rows.size()) + 1);
    QCOMPARE(reopened.methodsView()->bars()->dataCount(), 5);
    // A restored method's allocation shows without running anything.
    const int lra = rowOf(c, MethodKind::LraQvit);
    reopened.methodsView()->table()->selectRow(tableRow(c, lra));
    QCOMPARE(reopened.state()->shownMethod(), lra);
    QVERIFY(reopened.allocationView()->lowRankBars()->dataCount() > 0);
    QVERIFY(!reopened.jobRunning());
  }

  void cancelStopsTheRunAndSaysSo() {
    MethodsView* view = w_->methodsView();
    WorkbenchDocument* doc = w_->state();
    doc->setMethods(MethodComparison(), false);
    QCOMPARE(view->table()->rowCount(), 0);
    QSignalSpy done(w_.get(), &MainWindow::methodsFinished);
    QSignalSpy finished(w_->jobs(), &JobRunner::finished);
    view->runButton()->click();
    QVERIFY(w_->jobRunning());
    QVERIFY(view->cancelButton()->isEnabled());
    view->cancelButton()->click();
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), false);
    QCOMPARE(finished.takeFirst().at(2).toString(), QString("cancelled"));
    QVERIFY(!w_->jobRunning());
    // What finished before the cancel is kept, marked incomplete.
    QVERIFY(!doc->methods().complete);
    QVERIFY(doc->methods().rows.size() < all_methods().size());
    QVERIFY(view->stateLabel()->text().startsWith("Cancelled"));
    QVERIFY(view->runButton()->isEnabled());
    QVERIFY(!view->cancelButton()->isEnabled());
    QCOMPARE(doc->shownMethod(), -1);
  }

  void withoutAnAnalysisTheRunIsRefused() {
    MainWindow w;
    w.setQuiet(true);
    QVERIFY(w.openDemo());
    QVERIFY(!w.methodsView()->runButton()->isEnabled());
    QSignalSpy done(&w, &MainWindow::methodsFinished);
    QVERIFY(!w.startMethodComparison());
    QCOMPARE(done.count(), 1);
    QVERIFY(w.lastError().contains("analysis"));
  }
};

QTEST_MAIN(MethodsViewTest)
#include "test_methods_view.moc"
