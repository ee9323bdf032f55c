// The workbench on the offscreen platform: the demo analyzed with fast settings (LFH-estimated global errors, so
// the whole file stays well under two minutes), then budget gestures, pins, bulk constraints and layer groups with
// undo, the trade-off curve off the UI thread, evaluation, export, session save/reopen from the cache, the
// laptop-size layout, never losing work (untitled documents, save/discard/cancel naming a running job), the
// command line, and errors reported rather than fatal. Nothing here depends on how fast the machine is: tests
// wait for signals or states, and timeouts only bound a hang.
#include <qcustomplot.h>

#include <QApplication>
#include <QDockWidget>
#include <QDoubleSpinBox>
#include <QFile>
#include <QHeaderView>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QMenuBar>
#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QStandardPaths>
#include <QStatusBar>
#include <QSvgRenderer>
#include <QTableView>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QUndoStack>
#include <QtTest>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "allocation_view.h"
#include "budget_view.h"
#include "commands.h"
#include "compare_view.h"
#include "job_panel.h"
#include "job_runner.h"
#include "layers_view.h"
#include "lorq/io/onnx_export.h"
#include "lorq/session/api.h"
#include "loss_plot.h"
#include "main_window.h"
#include "pareto_view.h"
#include "plot_export.h"
#include "session_panel.h"
#include "workbench_args.h"
#include "workbench_document.h"

using namespace lorq::api;

class WorkbenchTest : public QObject {
  Q_OBJECT
 private:
  static AnalysisSettings testSettings() {
    AnalysisSettings s = AnalysisSettings::fast();
    s.estimate = true;
    // The workbench's views, not the quantizer: nearest rounding, the quicker analysis with one log line per layer.
    // The default (gptq) in the workbench: test_workbench_refine, test_session_panel.
    s.quantizer = "nearest";
    return s;
  }
  QString path(const QString& name) const { return QDir(tmp_.path()).filePath(name); }
  static QString readAll(const QString& file) {
    QFile f(file);
    return f.open(QIODevice::ReadOnly) ? QString::fromUtf8(f.readAll()) : QString();
  }
  // Whether a widget is shown, not hidden behind others or outside the window, and at least its minimum size.
  static bool reachable(QWidget* w, QWidget* window) {
    if (!w->isVisible() || w->visibleRegion().isEmpty()) return false;
    const QRect r(w->mapTo(window, QPoint(0, 0)), w->size());
    return window->rect().contains(r) && w->width() >= w->minimumSizeHint().width() &&
           w->height() >= w->minimumSizeHint().height() && w->visibleRegion().boundingRect().size() == w->size();
  }
  // A job that runs until cancelled: the test decides when it ends, not the machine's speed. It sleeps on a gate
  // that the runner's cancelRequested opens (the flag is raised before the signal, and the gate's mutex orders the
  // two, so no wake-up is lost).
  struct CancelGate {
    std::mutex m;
    std::condition_variable cv;
  };
  static void startBlockingJob(MainWindow* w, std::atomic<bool>* sawCancel) {
    auto gate = std::make_shared<CancelGate>();
    QObject::connect(
        w->jobs(), &JobRunner::cancelRequested, w->jobs(),
        [gate] {
          std::lock_guard<std::mutex> lock(gate->m);
          gate->cv.notify_all();
        },
        Qt::DirectConnection);
    QVERIFY(w->jobs()->start("Blocking test job", [sawCancel, gate](const lorq::JobControl& job) {
      std::unique_lock<std::mutex> lock(gate->m);
      gate->cv.wait(lock, [&] { return job.cancelled(); });
      *sawCancel = true;
      throw lorq::Cancelled();
    }));
  }

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
    QVERIFY(w_->startAnalysis());
    QVERIFY(w_->jobRunning());
    QVERIFY(done.wait(600000));  // bounds a hang only
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
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

  void budgetDragIsOneUndoStepAndTheNextDragAnother() {
    WorkbenchDocument* s = w_->state();
    QUndoStack* undo = w_->undoStack();
    undo->clear();
    const int64_t before = s->budget();
    QSlider* slider = w_->budgetView()->slider();
    slider->setSliderDown(true);  // press: a gesture starts
    for (int v : {200, 400, 600, 800}) {
      slider->setValue(v);
      QVERIFY(s->allocation().bytes <= s->allocation().budget_bytes);
    }
    slider->setSliderDown(false);
    QVERIFY(s->budget() != before);
    QCOMPARE(undo->count(), 1);  // one drag, one undo step
    const int64_t afterFirst = s->budget();
    const double errAt800 = s->allocation().predicted_error;
    slider->setSliderDown(true);
    slider->setValue(150);
    slider->setValue(100);
    slider->setSliderDown(false);
    QVERIFY(s->allocation().predicted_error >= errAt800);  // less memory, no less error (exact optimum)
    QCOMPARE(undo->count(), 2);                            // the second drag is a step of its own
    const int64_t afterSecond = s->budget();
    w_->budgetView()->avgBitsBox()->setValue(5.0);  // a typed value: another step
    QCOMPARE(undo->count(), 3);
    undo->undo();
    QCOMPARE(s->budget(), afterSecond);
    undo->undo();
    QCOMPARE(s->budget(), afterFirst);
    undo->undo();
    QCOMPARE(s->budget(), before);
    // Back to 4 bits for the following tests.
    w_->edit()->setBudget(budget_bytes_for_avg_bits(4.0, s->params()));
  }

  void pinLayerAndUndo() {
    WorkbenchDocument* s = w_->state();
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
    WorkbenchDocument* s = w_->state();
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
    WorkbenchDocument* s = w_->state();
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

  void curveIsComputedOffTheUIThreadAndSupersededOnesAreCancelled() {
    WorkbenchDocument* s = w_->state();
    QTRY_VERIFY_WITH_TIMEOUT(!s->curveRunning(), 120000);
    QSignalSpy cancelled(s, &WorkbenchDocument::curveCancelled);
    LayerConstraint c;
    c.min_bits = 6;
    QVERIFY(w_->edit()->setConstraint(3, c, "min 6 bits"));  // a new allocator: its curve starts on a worker
    QVERIFY(s->curveRunning());
    QVERIFY(s->curve().empty());
    w_->undoStack()->undo();  // another allocator before the first curve arrived: the first is cancelled
    QTRY_VERIFY_WITH_TIMEOUT(!s->curveRunning(), 120000);
    QCOMPARE(cancelled.count(), 1);
    QVERIFY(s->curve().size() > 10);
    // Every point is an exact optimum of the current allocator, ending at the largest allocation.
    for (const TradeoffPoint& p : s->curve())
      QVERIFY(std::abs(s->allocator()->solve(p.bytes).predicted_error - p.error) <= 1e-9 * (1 + p.error));
    QCOMPARE(s->curve().back().bytes, s->allocator()->solve(s->allocator()->max_bytes()).bytes);
    // An explicit cancel drops the computation and leaves no curve.
    QVERIFY(w_->edit()->setConstraint(3, c, "min 6 bits"));
    s->cancelCurve();
    QTRY_VERIFY_WITH_TIMEOUT(!s->curveRunning(), 120000);
    QCOMPARE(cancelled.count(), 2);
    QVERIFY(s->curve().empty());
    w_->undoStack()->undo();
    QTRY_VERIFY_WITH_TIMEOUT(!s->curve().empty(), 120000);
  }

  void bulkConstraintsByPatternAreOneUndoStep() {
    WorkbenchDocument* s = w_->state();
    LayersView* view = w_->layersView();
    const int depth = s->model().depth;
    QVERIFY(depth > 1);
    view->patternBox()->setText("*.attn.qkv");
    QCOMPARE(view->selectPattern("*.attn.qkv"), depth);
    const std::vector<int> layers = view->selectedLayers();
    QCOMPARE(static_cast<int>(layers.size()), depth);
    for (int l : layers) QVERIFY(QString::fromStdString(s->layers()[l].name).endsWith(".attn.qkv"));
    const int steps = w_->undoStack()->index();
    QVERIFY(w_->edit()->editConstraints(
        layers,
        [](int, LayerConstraint c) {
          c.min_bits = 6;
          return c;
        },
        "Minimum 6 bits on qkv"));
    QCOMPARE(w_->undoStack()->index(), steps + 1);
    for (int l : layers) {
      QCOMPARE(s->constraint(l).min_bits, 6);
      const OptionRow* o = s->chosenOption(l);
      QVERIFY(!o || (o->kind == OptionKind::Quant ? o->bits >= 6 : std::min(o->bits_a, o->bits_b) >= 6));
    }
    w_->undoStack()->undo();
    for (int l : layers) QVERIFY(s->constraint(l).empty());
  }

  void layerGroupsTakeOneChoiceAndUndo() {
    WorkbenchDocument* s = w_->state();
    const int a = s->layerIndex("blocks.0.mlp.fc1"), b = s->layerIndex("blocks.1.mlp.fc1");
    QVERIFY(a >= 0 && b >= 0);
    QVERIFY(w_->edit()->groupLayers({a, b}));
    QCOMPARE(static_cast<int>(s->groups().size()), 1);
    QCOMPARE(s->groupOf(a), 0);
    QCOMPARE(s->groupOf(b), 0);
    QCOMPARE(s->choiceLabel(a), s->choiceLabel(b));
    QVERIFY(w_->layersView()
                ->model()
                ->data(w_->layersView()->model()->index(a, LayersModel::Constraint), Qt::DisplayRole)
                .toString()
                .contains("group 1"));
    for (double bits : {2.5, 3.0, 5.0, 7.0}) {
      w_->edit()->setBudget(budget_bytes_for_avg_bits(bits, s->params()));
      QCOMPARE(s->choiceLabel(a), s->choiceLabel(b));
    }
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    QVERIFY(s->groups().empty());
    QCOMPARE(s->groupOf(a), -1);
  }

  void constraintsJsonExportsAndImports() {
    WorkbenchDocument* s = w_->state();
    const int a = s->layerIndex("blocks.2.mlp.fc2"), b = s->layerIndex("blocks.3.mlp.fc2");
    QVERIFY(w_->edit()->pinLayer(4, 0));
    QVERIFY(w_->edit()->groupLayers({a, b}));
    const ConstraintMap constraints = s->constraints();
    const LayerGroups groups = s->groups();
    const QString file = path("constraints.json");
    QVERIFY(w_->exportConstraints(file));
    const QString text = readAll(file);
    QVERIFY(text.contains("\"groups\""));
    QVERIFY(text.contains(QString::fromStdString(s->layers()[4].options[0].label)));  // pins by label
    QVERIFY(w_->edit()->clearAllConstraints());
    QVERIFY(s->constraints().empty() && s->groups().empty());
    QVERIFY(w_->importConstraints(file));
    QVERIFY(s->constraints() == constraints);
    QVERIFY(s->groups() == groups);
    w_->undoStack()->undo();  // the import is one step
    QVERIFY(s->constraints().empty());
    // A bad file is reported naming it, and changes nothing.
    QFile bad(path("bad-constraints.json"));
    QVERIFY(bad.open(QIODevice::WriteOnly));
    bad.write("{\"version\": 1, \"layers\": {\"no.such.layer\": {\"min_bits\": 4}}}");
    bad.close();
    QVERIFY(!w_->importConstraints(bad.fileName()));
    QVERIFY(w_->lastError().contains("bad-constraints.json"));
    QVERIFY(s->constraints().empty());
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    w_->undoStack()->undo();
    QVERIFY(s->constraints().empty() && s->groups().empty());
  }

  void layersTableExportsCsv() {
    const QString file = path("layers.csv");
    QCOMPARE(w_->layersView()->exportCsv(file), QString());
    const QStringList lines = readAll(file).split('\n', Qt::SkipEmptyParts);
    QCOMPARE(lines.size(), 1 + static_cast<int>(w_->state()->layers().size()));
    QVERIFY(lines[0].contains("Choice"));
    QVERIFY(lines[1].contains(QString::fromStdString(w_->state()->layers()[0].name)));
    QVERIFY(lines[1].contains(w_->state()->choiceLabel(0)));
  }

  void laptopSizeKeepsBudgetControlsAndRunAnalysisReachable() {
    w_->resize(1280, 760);
    w_->show();
    QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
    QTRY_COMPARE_WITH_TIMEOUT(w_->size(), QSize(1280, 760), 10000);
    w_->resetLayout();  // View > Reset layout at this size
    QApplication::processEvents();
    BudgetView* budget = w_->budgetView();
    QVERIFY2(reachable(budget->slider(), w_.get()), "budget slider");
    QVERIFY2(reachable(budget->avgBitsBox(), w_.get()), "average bits box");
    QVERIFY2(reachable(w_->sessionPanel()->analyzeButton(), w_.get()), "Run analysis button");
    // The choice column is in sight without scrolling the layers table sideways.
    QTableView* table = w_->layersView()->table();
    const QRect choice = table->visualRect(table->model()->index(0, LayersModel::Choice));
    QVERIFY2(table->viewport()->rect().contains(choice), "choice column");
    // Legends take at most a small part of a plot (or are collapsed); axis labels fit beside their axes.
    for (QCustomPlot* plot : {w_->paretoView()->plot(), w_->budgetView()->plot(), w_->allocationView()->plot()}) {
      plot->replot();
      const int axisHeight = plot->axisRect()->rect().height();
      QVERIFY2(axisHeight >= 60, qPrintable(plot->objectName()));
      if (plot->legend->visible() && plot->legend->layout() != plot->axisRect()->insetLayout())
        QVERIFY2(plot->legend->outerRect().height() <= 0.5 * plot->height(), qPrintable(plot->objectName()));
      for (QCPAxis* axis : {plot->yAxis, plot->yAxis2})
        if (axis->visible() && !axis->label().isEmpty())
          QVERIFY2(QFontMetrics(axis->labelFont()).horizontalAdvance(axis->label()) <= axisHeight,
                   qPrintable(plot->objectName() + ": " + axis->label()));
    }
    // The curve is drawn: the budget plot holds the curve's colour.
    QTRY_VERIFY_WITH_TIMEOUT(!w_->state()->curve().empty(), 120000);
    budget->plot()->replot();
    const QImage image = budget->plot()->grab().toImage();
    int curvePixels = 0;
    for (int y = 0; y < image.height(); ++y)
      for (int x = 0; x < image.width(); ++x) {
        const QColor c = image.pixelColor(x, y);
        if (std::abs(c.red() - 40) < 12 && std::abs(c.green() - 90) < 12 && std::abs(c.blue() - 160) < 12)
          ++curvePixels;
      }
    QVERIFY2(curvePixels > 50, qPrintable(QString("%1 curve pixels").arg(curvePixels)));
  }

  void floatLayerIsCappedAndSavedPlotsHaveNoSelectionBand() {
    WorkbenchDocument* s = w_->state();
    AllocationView* view = w_->allocationView();
    LayerConstraint c;
    c.excluded = Exclusion::Float;
    QVERIFY(w_->edit()->setConstraint(5, c, "keep in float"));
    QCOMPARE(s->allocation().choice[5], kKeepFloat);
    QVERIFY2(view->bitsAxisTop() < 12, "a float layer must not stretch the bits axis to 32");
    s->setSelectedLayer(2);
    view->plot()->replot();
    // The selection band (translucent amber over white) is on screen but not in the saved file.
    const auto bandPixels = [](const QImage& image) {
      int n = 0;
      for (int y = 0; y < image.height(); ++y)
        for (int x = 0; x < image.width(); ++x) {
          const QColor p = image.pixelColor(x, y);
          if (p.red() > 250 && std::abs(p.green() - 242) < 6 && std::abs(p.blue() - 196) < 8) ++n;
        }
      return n;
    };
    QVERIFY(bandPixels(view->plot()->toPixmap().toImage()) > 20);
    const QString png = path("allocation-saved.png"), pdf = path("allocation-saved.pdf");
    QCOMPARE(savePlot(view->plot(), png, [view] { return view->highlights(); }), QString());
    QCOMPARE(savePlot(view->plot(), pdf, [view] { return view->highlights(); }), QString());
    QVERIFY(QFileInfo(pdf).size() > 0);
    QImage saved(png);
    QVERIFY(!saved.isNull());
    QCOMPARE(bandPixels(saved), 0);
    QVERIFY(savePlot(view->plot(), path("x.bmp")).contains("x.bmp"));
    w_->undoStack()->undo();
  }

  void wheelOverTheSettingsPanelLeavesUnfocusedSpinBoxesAlone() {
    QSpinBox* box = w_->sessionPanel()->calibrationCountBox();
    QVERIFY(!box->hasFocus());
    const int before = box->value();
    const QPointF at(box->width() / 2.0, box->height() / 2.0);
    QWheelEvent wheel(at, box->mapToGlobal(at), QPoint(), QPoint(0, 120), Qt::NoButton, Qt::NoModifier,
                      Qt::NoScrollPhase, false);
    QApplication::sendEvent(box, &wheel);
    QCOMPARE(box->value(), before);
    QCOMPARE(w_->state()->settings().calibration_images, before);
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
    QVERIFY(!w_->jobRunning());  // showing the first image starts nothing
    // The caption names the true class, beside the image rather than over it.
    const ImageComparison& first = r->images.front();
    QVERIFY(first.label >= 0);
    QLabel* caption = w_->compareView()->caption();
    QVERIFY2(caption->text().contains("true class: <b>" + w_->state()->className(first.label) + "</b>"),
             qPrintable(caption->text()));
    QVERIFY(!w_->state()->className(first.label).startsWith("class "));  // a name, not an index
    QWidget* canvas = w_->compareView()->findChild<QWidget*>("compareCanvas");
    QVERIFY(canvas);
    w_->show();
    w_->compareDock()->raise();
    QVERIFY(QTest::qWaitForWindowExposed(w_.get()));
    QTRY_VERIFY_WITH_TIMEOUT(canvas->isVisible() && caption->isVisible(), 10000);
    const QRect captionRect(caption->mapTo(w_->compareView(), QPoint(0, 0)), caption->size());
    const QRect canvasRect(canvas->mapTo(w_->compareView(), QPoint(0, 0)), canvas->size());
    QVERIFY(captionRect.left() > canvasRect.right());  // beside the image, not under or over it
  }

  void oneImageGetsEveryClassKLAndDeltaP() {
    // The image whose float class is likeliest to leave the compressed top-5: the most changed one.
    const ImageComparison image = w_->compareView()->result()->images.front();
    QSignalSpy done(w_.get(), &MainWindow::predictionFinished);
    QVERIFY(w_->predictImage(QString::fromStdString(image.path), image.label));
    QVERIFY(done.wait(120000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    // The KL computed for the opened image is the evaluation's (both over every class), not 0.
    const QString caption = w_->compareView()->caption()->text();
    QVERIFY2(caption.contains(QString("KL %1,").arg(image.kl, 0, 'g', 3)), qPrintable(caption));
    QVERIFY(image.kl > 0);
    // Δp is a number for every float class, in the compressed top-5 or not.
    QTableWidget* table = w_->compareView()->table();
    for (int row = 0; row < std::min<int>(5, w_->state()->model().num_classes); ++row) {
      QVERIFY(table->item(row, 0));
      QVERIFY(table->item(row, 4));
      bool number = false;
      table->item(row, 4)->text().toDouble(&number);
      QVERIFY2(number, qPrintable(table->item(row, 4)->text()));
    }
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
    // The size breakdown of report.md is in the Jobs log too.
    QVERIFY2(w_->jobPanel()->logText().contains("budget"), qPrintable(w_->jobPanel()->logText().right(2000)));
  }

  void fileExportOnnxWritesAModel() {
    if (!lorq::onnx_export_available()) QSKIP("this build has no ONNX support");
    const QString file = QDir(path("onnx")).filePath("model.onnx");
    QDir().mkpath(path("onnx"));
    QSignalSpy done(w_.get(), &MainWindow::exportFinished);
    QVERIFY(w_->startExportOnnx(file));
    QVERIFY(done.wait(60000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    QVERIFY(QFileInfo(file).size() > 0);
    QVERIFY(!QFileInfo::exists(file + ".lorq-export"));  // the scratch export is gone
    QVERIFY(w_->jobPanel()->logText().contains("Exported ONNX"));
  }

  void roundingDrawsItsLossCurveAndExportsLearnedCodes() {
    QSignalSpy done(w_.get(), &MainWindow::roundingFinished);
    QVERIFY(w_->startRounding(20));
    QVERIFY(done.wait(300000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    LossPlot* loss = w_->jobPanel()->lossPlot();
    QVERIFY(loss->points() > 0);
    // One segment per rounding problem ("layer 1/26 patch_embed.proj", a block's layers together: "layers 2-5/26
    // blocks.0"), none of its first or last steps lost to the progress throttle. A step of k layers learned
    // together counts k steps, so that the progress ends at layers x steps.
    int rounded = 0;
    for (int c : w_->state()->allocation().choice) rounded += c != kKeepFloat;
    const auto& segments = loss->segments();
    QVERIFY(segments.size() > 1 && static_cast<int>(segments.size()) < rounded);
    const QRegularExpression part(R"(^layers? (\d+)(?:-(\d+))?/\d+ \S+$)");
    qint64 layers = 0;
    for (size_t i = 0; i < segments.size(); ++i) {
      const QRegularExpressionMatch m = part.match(segments[i].name);
      QVERIFY2(m.hasMatch(), qPrintable(segments[i].name));
      const qint64 first = m.captured(1).toLongLong(),
                   group = m.captured(2).isEmpty() ? 1 : m.captured(2).toLongLong() - first + 1;
      QCOMPARE(first, layers + 1);
      QCOMPARE(segments[i].firstStep, layers * 20 + group);
      layers += group;
      QCOMPARE(segments[i].lastStep, layers * 20);
    }
    QCOMPARE(layers, qint64(rounded));
    // The log has one line per segment with its loss at the start and the end.
    const QStringList lines = w_->jobPanel()->logText().split('\n');
    int partLines = 0;
    for (const QString& line : lines)
      if (line.contains(
              QRegularExpression(R"(layers? \d+(-\d+)?/\d+ \S+: loss \S+ at its first step → \S+ at its last$)")))
        ++partLines;
    QCOMPARE(partLines, static_cast<int>(segments.size()));
    // One segment alone.
    loss->showSegment(2);
    QCOMPARE(loss->plot()->xAxis->range().lower, segments[2].firstStep - 0.5);
    QCOMPARE(loss->plot()->xAxis->range().upper, segments[2].lastStep + 0.5);
    loss->showSegment(-1);
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
    WorkbenchDocument* s = w_->state();
    QVERIFY(w_->edit()->pinLayer(2, 0));
    w_->edit()->setBudget(budget_bytes_for_avg_bits(3.5, s->params()));
    const QString file = path("demo.lorq");
    QVERIFY(w_->saveSession(file));

    // The reopening loads the analysis from the engine cache (no measure of time: the cache says so itself).
    const auto probe =
        CompressionSession::open(s->modelPath().toStdString(), s->calibrationImages().toStdString(),
                                 s->calibrationLabels().toStdString(), s->settings(), s->cacheDir().toStdString());
    QVERIFY(probe->has_cached_analysis());

    MainWindow reopened;
    reopened.setQuiet(true);
    QSignalSpy done(&reopened, &MainWindow::analysisFinished);
    QVERIFY(reopened.openSession(file));
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    QVERIFY(!reopened.state()->isModified());
    QCOMPARE(reopened.state()->sessionPath(), file);
    QCOMPARE(reopened.state()->budget(), s->budget());
    QCOMPARE(reopened.state()->constraint(2).pinned_option, 0);
    QCOMPARE(reopened.state()->allocation().choice, s->allocation().choice);
    w_->undoStack()->undo();
    w_->undoStack()->undo();
  }

  void openingAnotherModelStartsAnUntitledDocument() {
    // w_ holds an analysis, an evaluation and a saved session; opening a model must not carry any of it over.
    const QString first = path("first.lorq");
    QVERIFY(w_->saveSession(first));
    const QString firstText = readAll(first);
    QVERIFY(w_->compareView()->result());
    int asked = 0;
    w_->setKeepWorkPrompt([&](const QString&) {
      ++asked;
      return MainWindow::KeepWork::Discard;
    });
    QVERIFY(w_->openModel(QString::fromStdString(find_demo().model_dir)));
    QCOMPARE(asked, 0);  // nothing unsaved: no question
    WorkbenchDocument* s = w_->state();
    QVERIFY(s->untitled());
    QVERIFY(!s->ready());
    QVERIFY(s->constraints().empty());
    QVERIFY(w_->windowTitle().startsWith("untitled"));
    QVERIFY(!w_->compareView()->result());
    QCOMPARE(w_->budgetView()->plot()->graph(0)->dataCount(), 0);
    // Ctrl+S on the untitled document asks for a name instead of overwriting the previous session file.
    int named = 0;
    const QString second = path("second.lorq");
    w_->setSaveNamePrompt([&] {
      ++named;
      return second;
    });
    QAction* saveAction = nullptr;
    for (QAction* a : w_->findChildren<QAction*>())
      if (a->shortcut() == QKeySequence(QKeySequence::Save)) saveAction = a;
    QVERIFY(saveAction);
    saveAction->trigger();
    QCOMPARE(named, 1);
    QCOMPARE(readAll(first), firstText);
    QVERIFY(QFileInfo::exists(second));
    QCOMPARE(s->sessionPath(), second);
    // Unsaved changes: opening another model asks first, and Cancel keeps the document.
    AnalysisSettings changed = s->settings();
    changed.projections += 1;
    w_->setSettings(changed);
    QVERIFY(s->isModified());
    QVERIFY(w_->isWindowModified());
    QString question;
    w_->setKeepWorkPrompt([&](const QString& q) {
      question = q;
      return MainWindow::KeepWork::Cancel;
    });
    QVERIFY(!w_->openModel(QString::fromStdString(find_demo().model_dir)));
    QVERIFY(question.contains("unsaved changes"));
    QVERIFY(question.contains("second.lorq"));
    QCOMPARE(s->sessionPath(), second);
    QVERIFY(s->isModified());
    w_->setKeepWorkPrompt({});
    w_->setSaveNamePrompt({});
  }

  void closingDuringAJobAsksNamingItAndCancelsIt() {
    auto w = std::make_unique<MainWindow>();
    w->setQuiet(true);
    w->setCacheDir(path("close-cache"));
    QVERIFY(w->openDemo());
    QString question;
    MainWindow::KeepWork answer = MainWindow::KeepWork::Cancel;
    w->setKeepWorkPrompt([&](const QString& q) {
      question = q;
      return answer;
    });
    std::atomic<bool> sawCancel{false};
    startBlockingJob(w.get(), &sawCancel);
    w->show();
    QVERIFY(!w->close());  // Cancel: the window stays and the job runs on
    QVERIFY(question.contains("Blocking test job"));
    QVERIFY(w->isVisible());
    QVERIFY(w->jobRunning());
    QVERIFY(!sawCancel);
    answer = MainWindow::KeepWork::Discard;
    QVERIFY(w->close());  // Discard: the job is cancelled and waited for
    QVERIFY(!w->jobRunning());
    QVERIFY(sawCancel);
    w.reset();
  }

  // A window of its own on the demo, analyzed (from the shared cache when the fixture filled it).
  std::unique_ptr<MainWindow> analyzedDemo(const QString& cache) {
    auto w = std::make_unique<MainWindow>();
    w->setQuiet(true);
    w->setCacheDir(cache);
    if (!w->openDemo()) return nullptr;
    w->setSettings(testSettings());
    QSignalSpy done(w.get(), &MainWindow::analysisFinished);
    if (!w->startAnalysis() || !done.wait(600000) || !done.takeFirst().at(0).toBool()) return nullptr;
    return w;
  }

  void sweepDrawsMeasuredAccuracyBesideThePredictedError() {
    auto w = analyzedDemo(path("cache"));
    QVERIFY(w);
    BudgetView* view = w->budgetView();
    QCOMPARE(view->sweepGraph()->dataCount(), 0);
    // The sweep evaluates as many images as Compare does (its limit box).
    QSpinBox* limit = nullptr;
    for (QSpinBox* b : w->compareView()->findChildren<QSpinBox*>())
      if (b->prefix().startsWith("limit")) limit = b;
    QVERIFY(limit);
    limit->setValue(32);
    QSignalSpy done(w.get(), &MainWindow::sweepFinished);
    QVERIFY(w->startSweep({2.0, 3.0, 4.0}, w->compareView()->limit()));
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    const SweepSeries* series = w->state()->currentSweep();
    QVERIFY(series);
    QCOMPARE(static_cast<int>(series->points.size()), 3);
    QCOMPARE(series->images, 32);
    // Measured top-1 at each budget (x: the allocation's MB) and the float model's line, on the right axis.
    QCOMPARE(view->sweepGraph()->dataCount(), 3);
    QCOMPARE(view->floatGraph()->dataCount(), 2);
    QVERIFY(view->plot()->yAxis2->visible());
    QVERIFY(view->plot()->yAxis2->label().contains("top-1"));
    for (int i = 0; i < 3; ++i) {
      const SweepPoint& p = series->points[i];
      QCOMPARE(view->sweepGraph()->data()->at(i)->key, p.bytes / 1e6);
      QCOMPARE(view->sweepGraph()->data()->at(i)->value, p.metrics.front().value);
    }
    QCOMPARE(view->floatGraph()->data()->at(0)->value, series->float_metrics.front().value);
    QVERIFY(w->state()->isModified());  // new results to save
    QVERIFY(w->jobPanel()->logText().contains("Sweep on 32 images"));

    // A budget the user marks on the curve (the plot's context menu) adds one measured point to the series. Shown at
    // a real size: a never-shown plot is a few dozen pixels wide, and one pixel spans most of a bit.
    w->resize(1500, 950);
    w->show();
    QVERIFY(QTest::qWaitForWindowExposed(w.get()));
    view->plot()->replot();
    const double mb = budget_bytes_for_avg_bits(3.5, w->state()->params()) / 1e6;
    const double marked = view->avgBitsAt(static_cast<int>(view->plot()->xAxis->coordToPixel(mb)));
    QVERIFY2(std::abs(marked - 3.5) < 0.25, qPrintable(QString::number(marked)));
    emit view->sweepRequested({marked});  // what the menu's "Measure accuracy at 3.50 bits" does
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    QCOMPARE(view->sweepGraph()->dataCount(), 4);
    QCOMPARE(static_cast<int>(w->state()->currentSweep()->points.size()), 4);

    // Other constraints: the points belong to another series and are not shown; undo brings them back.
    LayerConstraint q8;
    q8.excluded = Exclusion::Q8;
    QVERIFY(w->edit()->setConstraint(0, q8, "keep Q8"));
    QCOMPARE(view->sweepGraph()->dataCount(), 0);
    QVERIFY(!view->plot()->yAxis2->visible());
    w->undoStack()->undo();
    QCOMPARE(view->sweepGraph()->dataCount(), 4);

    // Saved in the session file and shown again after reopening, with nothing measured again.
    const QString file = path("sweep.lorq");
    QVERIFY(w->saveSession(file));
    MainWindow reopened;
    reopened.setQuiet(true);
    QSignalSpy analyzed(&reopened, &MainWindow::analysisFinished);
    QVERIFY(reopened.openSession(file));
    QVERIFY(analyzed.wait(600000));
    QCOMPARE(reopened.budgetView()->sweepGraph()->dataCount(), 4);
    QSignalSpy again(&reopened, &MainWindow::sweepFinished);
    QVERIFY(reopened.startSweep({3.0}, 32));
    QVERIFY(again.wait(600000));
    QVERIFY(reopened.jobPanel()->logText().contains("(cached)"));
    QVERIFY(!reopened.jobPanel()->logText().contains("stage: sweep"));  // nothing was evaluated
  }

  void plotsSaveAsValidSvg() {
    for (QCustomPlot* plot : {w_->budgetView()->plot(), w_->allocationView()->plot(), w_->paretoView()->plot()}) {
      const QString file = path(plot->objectName() + "-saved.svg");
      QCOMPARE(savePlot(plot, file), QString());
      QVERIFY(!QFile::exists(file + ".tmp"));
      QSvgRenderer svg(file);
      QVERIFY2(svg.isValid(), qPrintable(file));
      QCOMPARE(svg.viewBox(), QRect(QPoint(0, 0), plot->size()));
      const QString text = readAll(file);
      QVERIFY(text.contains("<svg"));
      QVERIFY(text.count("<path") + text.count("<polyline") > 5);  // drawn as vectors, not one bitmap
    }
    QVERIFY(savePlot(w_->budgetView()->plot(), path("x.gif")).contains(".svg"));  // the message lists SVG
  }

  void analysisHasOneWeightedProgressBarAndLogsEachLayersErrors() {
    auto w = std::make_unique<MainWindow>();
    w->setQuiet(true);
    w->setCacheDir(path("progress-cache"));  // empty: every stage runs
    QVERIFY(w->openDemo());
    w->setSettings(testSettings());
    std::vector<int> overall;
    connect(w->jobs(), &JobRunner::progress, w.get(), [&] { overall.push_back(w->jobPanel()->overallBar()->value()); });
    QSignalSpy done(w.get(), &MainWindow::analysisFinished);
    QVERIFY(w->startAnalysis());
    QVERIFY(done.wait(600000));
    QCOMPARE(done.takeFirst().at(0).toBool(), true);
    QVERIFY(overall.size() > 3);
    QVERIFY(std::is_sorted(overall.begin(), overall.end()));  // one bar that only moves forward
    QVERIFY(overall.back() > 900);
    QCOMPARE(w->jobPanel()->overallBar()->value(), 1000);
    // The global-error stage says each layer's error range, one line per layer.
    const QString log = w->jobPanel()->logText();
    QCOMPARE(log.count(QRegularExpression("global error layer \\d+/26 \\S+: error \\S+ \\.\\. \\S+ over \\d+")), 26);
    // The next analysis of the same model and settings weighs the stages by what they cost this time.
    QVERIFY(!QSettings().allKeys().filter("analysisCost/").isEmpty());
  }

  void fewerUsableCalibrationImagesAreNamedBeforeTheAnalysis() {
    const QString dir = path("few-images");
    QDir().mkpath(dir);
    const auto files = list_image_set(find_demo().images_dir, "").files;
    for (int i = 0; i < 6; ++i) {
      const QString f = QString::fromStdString(files[i]);
      QVERIFY(QFile::copy(f, QDir(dir).filePath(QFileInfo(f).fileName())));
    }
    {
      QFile broken(QDir(dir).filePath("broken-scan.png"));
      QVERIFY(broken.open(QIODevice::WriteOnly));
      broken.write("not a png at all");
    }
    MainWindow w;
    w.setQuiet(true);
    w.setCacheDir(path("few-cache"));
    QVERIFY(w.openModel(QString::fromStdString(find_demo().model_dir)));
    w.setSettings(testSettings());  // 16 calibration images
    QVERIFY(w.setImages(dir, ""));
    // The panel names the file it cannot decode and says the folder is too small, before anything runs.
    QVERIFY2(w.sessionPanel()->calibrationInfo()->text().contains("broken-scan.png"),
             qPrintable(w.sessionPanel()->calibrationInfo()->text()));
    QVERIFY(w.sessionPanel()->calibrationWarning()->text().contains("16 calibration images asked"));
    QSignalSpy done(&w, &MainWindow::analysisFinished);
    QVERIFY(w.startAnalysis());
    QVERIFY(done.wait(600000));
    const QString log = w.jobPanel()->logText();
    const int warning = log.indexOf("warning: only 6 of the 16 requested calibration images are usable");
    QVERIFY2(warning >= 0, qPrintable(log));
    QVERIFY(log.indexOf("broken-scan.png", warning) > warning);
    const int calibration = log.indexOf("stage: calibration");
    QVERIFY(calibration < 0 || warning < calibration);  // said before the calibration stage starts
  }

  void commandLineSessionReachesUsAndUnknownArgumentsFail() {
    std::vector<std::string> raw{"lorq-workbench", "--session", "work.lorq"};
    std::vector<char*> argv;
    for (std::string& a : raw) argv.push_back(a.data());
    const std::vector<std::string> kept = protectWorkbenchArguments(static_cast<int>(argv.size()), argv.data());
    // What Qt leaves alone: it only takes "-session"/"--session" followed by a separate value.
    QCOMPARE(kept.size(), size_t(2));
    QCOMPARE(QString::fromStdString(kept[1]), QString("--session=work.lorq"));
    QStringList args;
    for (const std::string& a : kept) args << QString::fromStdString(a);
    const WorkbenchOptions o = parseWorkbenchArguments(args);
    QVERIFY2(o.error.isEmpty(), qPrintable(o.error));
    QCOMPARE(o.session, QString("work.lorq"));
    QVERIFY(parseWorkbenchArguments({"lorq-workbench", "--bogus"}).error.contains("bogus"));
    QVERIFY(parseWorkbenchArguments({"lorq-workbench", "stray.lorq"}).error.contains("stray.lorq"));
    QVERIFY(
        parseWorkbenchArguments({"lorq-workbench", "--screenshot", "a.png", "--size", "12x"}).error.contains("--size"));
    const WorkbenchOptions shot =
        parseWorkbenchArguments({"lorq-workbench", "--screenshot", "a.png", "--size", "1280x760"});
    QVERIFY(shot.error.isEmpty());
    QCOMPARE(shot.screenshotSize, QSize(1280, 760));
  }
};

QTEST_MAIN(WorkbenchTest)
#include "test_workbench.moc"
