// The workbench's progressive analysis on the offscreen platform: the demo analyzed with measured global errors
// shows a complete allocation (layers table, Pareto points, status) from the LFH estimates before the measured
// errors exist, refines the same views as each layer is measured, and a pin made during the refinement survives
// it with its undo step, with either quantizer (cancelling the refinement is tested on the Session,
// tests/session/test_progressive_analysis: here the worker cannot be held at a chosen layer). Nothing here depends on
// the machine's speed: revisions reach the UI thread in order, the pin is made on the first one, and the test waits for
// the analysis to finish (the timeout only bounds a hang).
#include <qcustomplot.h>

#include <QLabel>
#include <QSignalSpy>
#include <QStandardPaths>
#include <QTableView>
#include <QTemporaryDir>
#include <QUndoStack>
#include <QtTest>

#include "commands.h"
#include "layers_view.h"
#include "lorq/session/api.h"
#include "main_window.h"
#include "pareto_view.h"
#include "workbench_document.h"

using namespace lorq::api;

class WorkbenchRefineTest : public QObject {
  Q_OBJECT
 private:
  QTemporaryDir tmp_;

  // Whether any label of the window says `text` (the status bar's allocation line, the Session panel).
  static bool labelSays(QWidget* window, const QString& text) {
    for (QLabel* l : window->findChildren<QLabel*>())
      if (l->text().contains(text)) return true;
    return false;
  }

 private slots:
  void initTestCase() {
    QStandardPaths::setTestModeEnabled(true);
    init_engine();
    QVERIFY(tmp_.isValid());
  }

  void firstAllocationComesFromEstimatesAndAPinSurvivesTheRefinement_data() {
    QTest::addColumn<QString>("quantizer");
    QTest::newRow("nearest") << "nearest";
    QTest::newRow("gptq") << "gptq";  // one estimated revision, then the cross-fitted measurement
  }

  void firstAllocationComesFromEstimatesAndAPinSurvivesTheRefinement() {
    QFETCH(QString, quantizer);
    MainWindow w;
    w.setQuiet(true);
    w.setCacheDir(QDir(tmp_.path()).filePath("cache"));
    QVERIFY(w.openDemo());
    AnalysisSettings settings = AnalysisSettings::fast();
    settings.estimate = false;  // measured global errors: the analysis refines its first, estimated allocation
    settings.quantizer = quantizer.toStdString();
    w.setSettings(settings);
    WorkbenchDocument* d = w.state();
    const int layer = 4;
    d->setSelectedLayer(layer);  // the Pareto view draws this layer's options as soon as they exist

    // What the views showed at the document's first allocation, and the pin made right then.
    bool first = true;
    GlobalErrorState firstErrors;
    QString firstChoice, firstStatus;
    int paretoGraphs = 0;
    int pinned = -1;
    std::vector<GlobalErrorState> seen;
    connect(d, &WorkbenchDocument::allocationChanged, &w, [&] {
      if (!d->ready()) return;
      seen.push_back(d->globalErrors());
      if (!first) return;
      first = false;  // before pinning: the pin changes the allocation again
      firstErrors = d->globalErrors();
      firstChoice = w.layersView()->model()->index(layer, LayersModel::Choice).data().toString();
      firstStatus = QString::fromStdString(firstErrors.text());
      paretoGraphs = w.paretoView()->plot()->graphCount();
      // The biggest option other than the current choice: the pin changes the allocation.
      const int current = d->allocation().choice[layer];
      const auto& options = d->layers()[layer].options;
      for (int i = 0; i < static_cast<int>(options.size()); ++i)
        if (i != current && (pinned < 0 || options[i].bytes > options[pinned].bytes)) pinned = i;
      if (pinned >= 0) w.edit()->pinLayer(layer, pinned);
    });
    QSignalSpy refined(d, &WorkbenchDocument::analysisRefined);
    QSignalSpy done(&w, &MainWindow::analysisFinished);
    QVERIFY(w.startAnalysis());
    QVERIFY(done.wait(600000));  // bounds a hang only
    QCOMPARE(done.takeFirst().at(0).toBool(), true);

    // The first allocation came before any estimated layer was measured, complete and shown.
    QVERIFY(!first);
    QCOMPARE(firstErrors.layers, 26);
    QVERIFY(firstErrors.measured_layers < firstErrors.layers);
    QVERIFY(!firstChoice.isEmpty());
    QVERIFY(paretoGraphs > 0);
    QVERIFY(firstStatus == "estimated (LFH)" || firstStatus.startsWith("measured "));
    // Then refined in place, one revision per measured layer, the count of measured layers only rising.
    QVERIFY(refined.count() >= 1);
    for (size_t i = 1; i < seen.size(); ++i) QVERIFY(seen[i].measured_layers >= seen[i - 1].measured_layers);
    QVERIFY(d->globalErrors().measured());
    QVERIFY(labelSays(&w, "global errors: measured"));
    QVERIFY(!labelSays(&w, "estimated (LFH)"));

    // The pin made on the estimated allocation survived every refinement, with its one undo step.
    QVERIFY(pinned >= 0);
    QCOMPARE(d->constraint(layer).pinned_option, pinned);
    QCOMPARE(d->allocation().choice[layer], pinned);
    QVERIFY(d->allocation().bytes <= d->allocation().budget_bytes);
    QCOMPARE(w.undoStack()->count(), 1);
    w.undoStack()->undo();
    QVERIFY(d->constraint(layer).empty());
    w.undoStack()->redo();
    QCOMPARE(d->allocation().choice[layer], pinned);

    // The saved session says the errors were measured.
    QCOMPARE(d->toSessionFile().global_errors, d->globalErrors());
  }
};

QTEST_MAIN(WorkbenchRefineTest)
#include "test_workbench_refine.moc"
