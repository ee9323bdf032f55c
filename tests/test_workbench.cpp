// The GUI on the offscreen platform: opens the demo, runs an evaluation job off the UI thread, reports errors.
#include <QSignalSpy>
#include <QStatusBar>
#include <QTableWidget>
#include <QtTest>

#include "lorq/api.h"
#include "main_window.h"

class WorkbenchTest : public QObject {
  Q_OBJECT
 private slots:
  void initTestCase() { lorq::api::init_engine(); }

  void opensDemoAndEvaluates() {
    const lorq::api::DemoPaths demo = lorq::api::find_demo();
    QVERIFY(!demo.model_dir.empty());
    MainWindow w;
    QVERIFY(w.openModel(QString::fromStdString(demo.model_dir), true));
    auto* table = w.findChild<QTableWidget*>();
    QVERIFY(table);
    QCOMPARE(table->rowCount(), 26);
    w.setImages(QString::fromStdString(demo.images_dir), QString::fromStdString(demo.labels_csv));
    QSignalSpy done(&w, &MainWindow::evaluationFinished);
    w.startEvaluation();
    QVERIFY(w.evaluationRunning());
    QVERIFY(done.wait(60000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
  }

  void badModelIsReportedNotFatal() {
    MainWindow w;
    QVERIFY(!w.openModel("/nonexistent/model-folder", true));
    QVERIFY(w.statusBar()->currentMessage().contains("/nonexistent/model-folder"));
  }
};

QTEST_MAIN(WorkbenchTest)
#include "test_workbench.moc"
