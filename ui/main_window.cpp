#include "main_window.h"

#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QMenuBar>
#include <QMessageBox>
#include <QScrollArea>
#include <QSettings>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTimer>
#include <QUndoStack>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "allocation_view.h"
#include "budget_view.h"
#include "commands.h"
#include "compare_view.h"
#include "export_report.h"
#include "final_settings_dialog.h"
#include "format.h"
#include "job_panel.h"
#include "job_runner.h"
#include "layers_view.h"
#include "lorq/common/file_util.h"
#include "lorq/io/export_size.h"
#include "lorq/io/onnx_export.h"
#include "lorq/session/analysis_progress.h"
#include "lorq/session/image_check.h"
#include "lorq/session/sweep.h"
#include "loss_plot.h"
#include "methods_view.h"
#include "pareto_view.h"
#include "session_panel.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {
constexpr int kMaxRecent = 8;

// " top-1 81.25% top-5 99.61%"
QString metricsText(const std::vector<MetricValue>& metrics) {
  QString text;
  for (const MetricValue& m : metrics)
    text += QString(" %1 %2%3").arg(QString::fromStdString(m.name)).arg(m.value, 0, 'f', 2).arg(m.percent ? "%" : "");
  return text;
}

// Where the stage costs of the last analysis of this model with these settings are kept (QSettings).
QString analysisCostKey(const std::string& model, const AnalysisSettings& s) {
  const std::string text = QFileInfo(QString::fromStdString(model)).absoluteFilePath().toStdString() + "|" +
                           std::to_string(s.calibration_images) + "|" + std::to_string(s.lfh_images) + "|" +
                           std::to_string(s.projections) + "|" + std::to_string(s.anchors) + "|" +
                           std::to_string(s.estimate) + "|" + s.quantizer + (s.calibrated_errors ? "|c" : "") +
                           (s.gptq_images > 0 ? "|m" + std::to_string(s.gptq_images) : "") +
                           (s.gptq_damping != 0.01 ? "|d" + std::to_string(s.gptq_damping) : "");
  return "analysisCost/" + QString::fromStdString(lorq::fnv1a64_hex(text.data(), text.size()));
}

QDockWidget* dock(QMainWindow* window, const QString& title, const QString& name, QWidget* content) {
  auto* d = new QDockWidget(title, window);
  d->setObjectName(name);  // saveState/restoreState key
  d->setWidget(content);
  return d;
}
}  // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle("LoRQ Workbench");
  state_ = new WorkbenchDocument(this);
  state_->setCacheDir(QStandardPaths::writableLocation(QStandardPaths::CacheLocation) + "/analysis");
  undo_ = state_->undoStack();
  edit_ = new EditActions(state_, undo_, this);
  jobs_ = new JobRunner(this);

  layers_ = new LayersView(state_, edit_, this);
  setCentralWidget(layers_);
  buildDocks();
  buildMenus();

  allocationStatus_ = new QLabel(this);
  statusBar()->addPermanentWidget(allocationStatus_);
  statusBar()->showMessage("Open a model (or the demo) and calibration images, then run the analysis");

  connect(edit_, &EditActions::problem, this, [this](const QString& m) { report("Cannot apply the constraint", m); });
  connect(state_, &WorkbenchDocument::allocationChanged, this, &MainWindow::updateStatus);
  connect(state_, &WorkbenchDocument::finalChanged, this, &MainWindow::updateStatus);
  connect(state_, &WorkbenchDocument::allocationChanged, this, &MainWindow::onFinalStateChanged);
  connect(state_, &WorkbenchDocument::finalChanged, this, &MainWindow::onFinalStateChanged);
  connect(state_, &WorkbenchDocument::allocationChanged, compare_, &CompareView::markStale);
  connect(state_, &WorkbenchDocument::modifiedChanged, this, &MainWindow::updateTitle);
  connect(state_, &WorkbenchDocument::sessionPathChanged, this, &MainWindow::updateTitle);
  connect(state_, &WorkbenchDocument::modelChanged, this, &MainWindow::updateTitle);
  connect(state_, &WorkbenchDocument::documentReset, this, [this] {
    ++analysisGeneration_;  // a running analysis' revisions belong to the previous document
    compare_->clear();
    jobPanel_->lossPlot()->clear();
  });
  connect(jobs_, &JobRunner::started, this, [this] { session_->setBusy(true); });
  connect(jobs_, &JobRunner::finished, this, [this](const QString& name, bool ok, const QString& error) {
    session_->setBusy(false);
    if (ok) {
      statusBar()->showMessage(name + " finished", 5000);
    } else if (error == "cancelled") {
      statusBar()->showMessage(name + " cancelled");
    } else {
      jobsDock_->raise();
      report(name + " failed", error);
    }
  });

  resize(1500, 950);
  defaultLayout_ = saveState();
  QSettings settings;
  restoreGeometry(settings.value("window/geometry").toByteArray());
  // Dock sizes only apply once the window is laid out, hence after the first event-loop turn.
  if (!restoreState(settings.value("window/state").toByteArray()))
    QTimer::singleShot(0, this, &MainWindow::resetLayout);
}

void MainWindow::resetLayout() {
  restoreState(defaultLayout_);
  const auto docks = [this](std::initializer_list<const char*> names) {
    QList<QDockWidget*> out;
    for (const char* n : names) out << findChild<QDockWidget*>(n);
    return out;
  };
  resizeDocks(docks({"sessionDock", "paretoDock"}), {290, 430}, Qt::Horizontal);
  resizeDocks(docks({"allocationDock"}), {height() < 900 ? 220 : 260}, Qt::Vertical);
  // In a short window the budget (slider, boxes and curve) gets the larger share: it is the main control.
  resizeDocks(docks({"paretoDock", "budgetDock"}), {height() < 900 ? 230 : 400, 330}, Qt::Vertical);
  findChild<QDockWidget*>("allocationDock")->raise();
}

MainWindow::~MainWindow() { jobs_->cancelAndWait(); }

void MainWindow::setCacheDir(const QString& dir) { state_->setCacheDir(dir); }
QString MainWindow::cacheDir() const { return state_->cacheDir(); }

void MainWindow::buildDocks() {
  session_ = new SessionPanel(state_, this);
  auto* sessionScroll = new QScrollArea(this);  // the panel scrolls rather than squeezing its fields
  sessionScroll->setWidget(session_);
  sessionScroll->setWidgetResizable(true);
  sessionScroll->setFrameShape(QFrame::NoFrame);
  sessionScroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  // Run analysis stays below the scrolling fields, visible at any window height.
  auto* sessionContent = new QWidget(this);
  auto* sessionLayout = new QVBoxLayout(sessionContent);
  sessionLayout->setContentsMargins(0, 0, 0, 0);
  sessionLayout->setSpacing(0);
  sessionLayout->addWidget(sessionScroll, 1);
  sessionLayout->addWidget(session_->analyzeBar());
  pareto_ = new ParetoView(state_, edit_, this);
  budget_ = new BudgetView(state_, edit_, this);
  allocation_ = new AllocationView(state_, edit_, this);
  compare_ = new CompareView(this);
  jobPanel_ = new JobPanel(jobs_, this);
  methods_ = new MethodsView(state_, jobs_, this);

  setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowTabbedDocks | QMainWindow::AllowNestedDocks);
  auto* sessionDock = dock(this, "Session", "sessionDock", sessionContent);
  auto* paretoDock = dock(this, "Layer options (Pareto)", "paretoDock", pareto_);
  auto* budgetDock = dock(this, "Budget", "budgetDock", budget_);
  auto* allocationDock = dock(this, "Allocation", "allocationDock", allocation_);
  compareDock_ = dock(this, "Compare", "compareDock", compare_);
  jobsDock_ = dock(this, "Jobs", "jobsDock", jobPanel_);
  methodsDock_ = dock(this, "Methods", "methodsDock", methods_);
  addDockWidget(Qt::LeftDockWidgetArea, sessionDock);
  addDockWidget(Qt::RightDockWidgetArea, paretoDock);
  addDockWidget(Qt::RightDockWidgetArea, budgetDock);
  addDockWidget(Qt::BottomDockWidgetArea, allocationDock);
  addDockWidget(Qt::BottomDockWidgetArea, compareDock_);
  addDockWidget(Qt::BottomDockWidgetArea, jobsDock_);
  addDockWidget(Qt::BottomDockWidgetArea, methodsDock_);
  tabifyDockWidget(allocationDock, compareDock_);
  tabifyDockWidget(compareDock_, jobsDock_);
  tabifyDockWidget(jobsDock_, methodsDock_);
  allocationDock->raise();

  connect(session_, &SessionPanel::openModelRequested, this, &MainWindow::onOpenModel);
  connect(session_, &SessionPanel::openDemoRequested, this, &MainWindow::openDemo);
  connect(session_, &SessionPanel::chooseCalibrationRequested, this, &MainWindow::onChooseCalibration);
  connect(session_, &SessionPanel::chooseEvalRequested, this, &MainWindow::onChooseEval);
  connect(session_, &SessionPanel::analyzeRequested, this, &MainWindow::startAnalysis);
  connect(compare_, &CompareView::evaluateRequested, this, &MainWindow::startEvaluation);
  connect(compare_, &CompareView::openImageRequested, this, [this](const QString& path) { predictImage(path); });
  // An evaluated image whose float class left the compressed top-5: both models on every class, when no job runs.
  connect(compare_, &CompareView::detailsRequested, this, [this](const ImageComparison& image) {
    if (jobs_->running())
      statusBar()->showMessage("A job is running: every class of this image is computed once it ends", 5000);
    else
      predictImage(QString::fromStdString(image.path), image.label);
  });
  compare_->setClassNamer([this](int index) { return state_->className(index); });
  connect(budget_, &BudgetView::sweepRequested, this, [this](const std::vector<double>& bits) {
    jobsDock_->raise();
    startSweep(bits, compare_->limit());
  });
  connect(jobs_, &JobRunner::started, this, [this] {
    if ((!compareDock_->isVisible() || compareDock_->visibleRegion().isEmpty()) &&
        (!methodsDock_->isVisible() || methodsDock_->visibleRegion().isEmpty()))
      jobsDock_->raise();
  });
  connect(methods_, &MethodsView::runRequested, this, &MainWindow::startMethodComparison);
  // A method's allocation is drawn in the Allocation view: bring it forward.
  connect(methods_, &MethodsView::methodShown, allocationDock, &QDockWidget::raise);
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("&Open session…", QKeySequence::Open, this, &MainWindow::onOpenSession);
  file->addAction("&Save session", QKeySequence::Save, this, [this] { save(false); });
  file->addAction("Save session &as…", QKeySequence::SaveAs, this, [this] { save(true); });
  recentMenu_ = file->addMenu("&Recent sessions");
  rebuildRecentMenu();
  file->addSeparator();
  file->addAction("Open &model…", QKeySequence("Ctrl+M"), this, &MainWindow::onOpenModel);
  file->addAction("Open &demo", QKeySequence("Ctrl+D"), this, &MainWindow::openDemo);
  {
    const DemoPaths demo = find_demo();
    QAction* det = file->addAction("Open demo de&tector", this, &MainWindow::openDemoDetector);
    QAction* seg = file->addAction("Open demo se&gmenter", this, &MainWindow::openDemoSegmenter);
    det->setEnabled(!demo.detector_dir.empty() && !demo.scenes_dir.empty());
    seg->setEnabled(!demo.segmenter_dir.empty() && !demo.scenes_dir.empty());
  }
  file->addAction("Calibration &images…", QKeySequence("Ctrl+I"), this, &MainWindow::onChooseCalibration);
  file->addAction("&Evaluation images…", QKeySequence("Ctrl+E"), this, &MainWindow::onChooseEval);
  file->addSeparator();
  file->addAction("E&xport…", QKeySequence("Ctrl+Shift+E"), this, &MainWindow::onExport);
  file->addAction("Export &ONNX…", this, &MainWindow::onExportOnnx);
  file->addSeparator();
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  QMenu* edit = menuBar()->addMenu("&Edit");
  QAction* undo = undo_->createUndoAction(this, "&Undo");
  undo->setShortcut(QKeySequence::Undo);
  QAction* redo = undo_->createRedoAction(this, "&Redo");
  redo->setShortcut(QKeySequence::Redo);
  edit->addAction(undo);
  edit->addAction(redo);
  edit->addSeparator();
  edit->addAction("Clear all &constraints", this, [this] { edit_->clearAllConstraints(); });
  edit->addSeparator();
  edit->addAction("&Import constraints…", this, [this] {
    const QString f =
        QFileDialog::getOpenFileName(this, "Import constraints", {}, "Constraints (*.json);;All files (*)");
    if (!f.isEmpty()) importConstraints(f);
  });
  edit->addAction("E&xport constraints…", this, [this] {
    const QString f =
        QFileDialog::getSaveFileName(this, "Export constraints", "constraints.json", "Constraints (*.json)");
    if (!f.isEmpty()) exportConstraints(f);
  });

  QMenu* analysis = menuBar()->addMenu("&Analysis");
  analysis->addAction("&Run analysis", QKeySequence("F5"), this, [this] {
    jobsDock_->raise();  // F5 brings the progress forward
    startAnalysis();
  });
  analysis->addAction("&Evaluate float vs compressed", QKeySequence("F6"), this, &MainWindow::startEvaluation);
  analysis->addAction("&Final model…", this, [this] { openFinalDialog(); });
  // F7: the same dialog with adaptive rounding on.
  analysis->addAction("Adaptive &rounding…", QKeySequence("F7"), this, [this] { openFinalDialog(true); });
  analysis->addAction("&Sweep budgets (measured accuracy)…", QKeySequence("F8"), this, [this] {
    if (!state_->ready()) {
      startSweep();  // says what is missing
      return;
    }
    const auto& a = state_->allocator();
    const double lo = std::ceil(16.0 * a->min_bytes() / state_->params()) / 2;
    const double hi = std::floor(16.0 * a->max_bytes() / state_->params()) / 2;
    bool ok = false;
    const QString text = QInputDialog::getText(
        this, "Sweep budgets",
        "Average bits to evaluate: START:STOP:STEP, a list (3,4,6), or empty for every half bit\n"
        "between the smallest and the largest useful budget:",
        QLineEdit::Normal, QString("%1:%2:0.5").arg(std::max(lo, 0.5)).arg(std::max(hi, lo)), &ok);
    if (!ok) return;
    std::vector<double> bits;
    try {
      if (!text.trimmed().isEmpty()) bits = parse_avg_bits_list(text.trimmed().toStdString());
    } catch (const std::exception& e) {
      report("Cannot sweep budgets", QString::fromStdString(e.what()));
      return;
    }
    jobsDock_->raise();
    startSweep(bits, compare_->limit());
  });
  analysis->addAction("Compare &methods at this budget", this, [this] {
    methodsDock_->raise();
    startMethodComparison();
  });
  analysis->addAction("&Cancel job", QKeySequence("Ctrl+."), jobs_, &JobRunner::cancel);
  analysis->addSeparator();
  // Budget steps from the keyboard: a quarter bit per weight.
  auto step = [this](double bits) {
    if (!state_->ready()) return;
    edit_->setBudget(state_->budget() + budget_bytes_for_avg_bits(bits, state_->params()));
  };
  analysis->addAction("Budget &up ¼ bit", QKeySequence("Ctrl+Up"), this, [step] { step(0.25); });
  analysis->addAction("Budget &down ¼ bit", QKeySequence("Ctrl+Down"), this, [step] { step(-0.25); });

  QMenu* view = menuBar()->addMenu("&View");
  for (QDockWidget* d : findChildren<QDockWidget*>()) view->addAction(d->toggleViewAction());
  view->addSeparator();
  view->addAction("&Reset layout", this, &MainWindow::resetLayout);
}

void MainWindow::report(const QString& title, const QString& message) {
  lastError_ = message;
  statusBar()->showMessage(title + ": " + message);
  jobPanel_->log(title + ": " + message);
  if (!quiet_) QMessageBox::warning(this, title, message);
}

bool MainWindow::openModel(const QString& path, bool quiet) {
  if (!maybeKeepWork("opening another model")) return false;
  return loadModel(path, quiet);
}

bool MainWindow::loadModel(const QString& path, bool quiet) {
  const bool wasQuiet = quiet_;
  quiet_ = quiet_ || quiet;
  std::shared_ptr<ModelHandle> handle;
  try {
    handle = ModelHandle::open(path.toStdString());
  } catch (const std::exception& e) {
    report("Cannot open the model", QString::fromStdString(e.what()));
    quiet_ = wasQuiet;
    return false;
  }
  quiet_ = wasQuiet;
  state_->setModel(path, handle->summary());  // a new, untitled document
  addRecent("recent/models", path);
  statusBar()->showMessage("Loaded " + path);
  updateTitle();
  updateStatus();
  return true;
}

bool MainWindow::openDemo() {
  const DemoPaths demo = find_demo();
  if (demo.model_dir.empty()) {
    report("Demo not found", "the embedded demo (datasets/demo-vit) is not installed beside the program");
    return false;
  }
  if (!openModel(QString::fromStdString(demo.model_dir))) return false;
  return setImages(QString::fromStdString(demo.images_dir), QString::fromStdString(demo.labels_csv));
}

bool MainWindow::openDemoDetector() {
  const DemoPaths demo = find_demo();
  if (demo.detector_dir.empty() || demo.scenes_dir.empty()) {
    report("Demo detector not found", "datasets/demo-yolos and datasets/demo-scenes are not installed beside the program");
    return false;
  }
  // The scenes' YOLO label files sit beside the images: no labels file to name.
  return openModel(QString::fromStdString(demo.detector_dir)) && setImages(QString::fromStdString(demo.scenes_dir), {});
}

bool MainWindow::openDemoSegmenter() {
  const DemoPaths demo = find_demo();
  if (demo.segmenter_dir.empty() || demo.scenes_dir.empty()) {
    report("Demo segmenter not found",
           "datasets/demo-segformer and datasets/demo-scenes are not installed beside the program");
    return false;
  }
  return openModel(QString::fromStdString(demo.segmenter_dir)) && setImages(QString::fromStdString(demo.scenes_dir), {});
}

bool MainWindow::setImages(const QString& images, const QString& labels) {
  const QString problem = state_->setCalibration(images, labels);
  if (!problem.isEmpty()) {
    session_->showCalibrationProblem(problem);
    report("Cannot use the images", problem);
    return false;
  }
  return true;
}

void MainWindow::setEvalImages(const QString& images, const QString& labels) { state_->setEval(images, labels); }

void MainWindow::setSettings(const AnalysisSettings& settings) { state_->setSettings(settings); }

bool MainWindow::maybeKeepWork(const QString& action) {
  const bool running = jobs_->running();
  if (!state_->isModified() && !running) return true;
  QStringList lines;
  if (state_->isModified()) lines << QString("The session “%1” has unsaved changes.").arg(state_->displayName());
  if (running) lines << QString("The job “%1” is running and will be cancelled.").arg(jobs_->currentJob());
  lines << QString("Save the session before %1?").arg(action);
  const QString question = lines.join("\n");
  KeepWork answer = KeepWork::Discard;
  if (keepWorkPrompt_) {
    answer = keepWorkPrompt_(question);
  } else if (!quiet_) {
    const auto button =
        QMessageBox::question(this, "Keep your work?", question,
                              QMessageBox::Save | QMessageBox::Discard | QMessageBox::Cancel, QMessageBox::Save);
    answer = button == QMessageBox::Save      ? KeepWork::Save
             : button == QMessageBox::Discard ? KeepWork::Discard
                                              : KeepWork::Cancel;
  }
  if (answer == KeepWork::Cancel) return false;
  if (answer == KeepWork::Save && state_->hasModel() && !save(false)) return false;
  if (running) {
    statusBar()->showMessage("Cancelling " + jobs_->currentJob() + "…");
    jobs_->cancelAndWait();  // the engine stops at its next safe point
  }
  return true;
}

bool MainWindow::jobRunning() const { return jobs_->running(); }

bool MainWindow::evaluationRunning() const { return jobs_->running() && jobs_->currentJob() == "Evaluation"; }

bool MainWindow::runJob(const QString& name, std::function<void(const lorq::JobControl&)> work,
                        std::function<void()> done, void (MainWindow::*finished)(bool)) {
  if (!jobs_->start(name, std::move(work), std::move(done))) {
    statusBar()->showMessage("A job is running; cancel it first");
    if (finished) emit(this->*finished)(false);
    return false;
  }
  if (finished) {
    // One-shot: this job's end reports its outcome.
    auto* conn = new QMetaObject::Connection;
    *conn = connect(jobs_, &JobRunner::finished, this, [this, conn, finished](const QString&, bool ok) {
      disconnect(*conn);
      delete conn;
      emit(this->*finished)(ok);
    });
  }
  return true;
}

bool MainWindow::startAnalysis() {
  if (state_->modelPath().isEmpty() || state_->calibrationImages().isEmpty()) {
    report("Cannot analyze", "open a model and choose calibration images first");
    emit analysisFinished(false);
    return false;
  }
  const std::string model = state_->modelPath().toStdString(), images = state_->calibrationImages().toStdString(),
                    labels = state_->calibrationLabels().toStdString(), cache = state_->cacheDir().toStdString();
  const AnalysisSettings settings = state_->settings();
  auto result = std::make_shared<std::shared_ptr<CompressionSession>>();
  // One bar for the whole analysis: its stages weighted by what they cost the last time this model was analyzed
  // with these settings here, else by fixed estimates relative to each other.
  const QString costKey = analysisCostKey(model, settings);
  std::vector<std::pair<std::string, double>> lastRun;
  const QStringList stored = QSettings().value(costKey).toStringList();
  for (const QString& entry : stored)
    lastRun.emplace_back(entry.section('=', 0, 0).toStdString(), entry.section('=', 1).toDouble());
  jobPanel_->setStagePlan("Analysis", analysis_stage_costs(settings, lastRun));
  // A progressive analysis: its first revision (LFH-estimated global errors) is shown as soon as it exists, and each
  // later one (errors measured layer by layer) refines the same views; revisions are adopted on this thread.
  const int generation = ++analysisGeneration_;
  return runJob(
      "Analysis",
      [=](const lorq::JobControl& job) {
        auto s = CompressionSession::open(model, images, labels, settings, cache);
        // Before the analysis starts: fewer usable calibration images than asked is said first.
        const CalibrationCheck check = check_calibration_images(*s, job);
        if (!check.ok())
          QMetaObject::invokeMethod(
              this,
              [this, w = QString::fromStdString(check.warning())] {
                jobPanel_->log("warning: " + w);
                statusBar()->showMessage("Analysis: " + w, 15000);
              },
              Qt::QueuedConnection);
        s->analyze(job, [this, s, generation](const std::shared_ptr<const AnalysisRevision>& revision) {
          QMetaObject::invokeMethod(
              this, [this, s, revision, generation] { onAnalysisRevision(s, revision, generation); },
              Qt::QueuedConnection);
        });
        *result = s;
      },
      [this, result, costKey] {
        const auto& s = *result;
        // Every revision was queued before the job ended, so the final one is adopted by now.
        {  // What each stage cost, for the next analysis' progress (stages loaded from the cache cost nothing).
          QStringList costs;
          const auto& cachedStages = s->cached_stages();
          for (const auto& [stage, sec] : s->stage_seconds())
            if (std::find(cachedStages.begin(), cachedStages.end(), stage) == cachedStages.end() && sec > 0)
              costs << QString("%1=%2").arg(QString::fromStdString(stage)).arg(sec);
          if (!costs.isEmpty()) QSettings().setValue(costKey, costs);
        }
        for (const std::string& w : s->warnings()) jobPanel_->log("warning: " + QString::fromStdString(w));
        // Which stages ran (with their times) and which came from the session cache.
        QStringList ran, cached;
        for (const std::string& c : s->cached_stages()) cached << QString::fromStdString(c);
        for (const auto& [stage, sec] : s->stage_seconds())
          if (!cached.contains(QString::fromStdString(stage)))
            ran << QString("%1 %2 s").arg(QString::fromStdString(stage)).arg(sec, 0, 'f', 1);
        if (!ran.isEmpty()) jobPanel_->log("Analysis: " + ran.join(", "));
        if (!cached.isEmpty()) jobPanel_->log("From the session cache: " + cached.join(", "));
      },
      &MainWindow::analysisFinished);
}

void MainWindow::onAnalysisRevision(const std::shared_ptr<CompressionSession>& s,
                                    const std::shared_ptr<const AnalysisRevision>& revision, int generation) {
  if (generation != analysisGeneration_ || !s->adopt(revision)) return;  // superseded, or already newer
  if (state_->session() == s) {
    // A refinement: the user's constraints, budget, selection and undo history stay.
    const QString problem = state_->refreshAnalysis();
    if (!problem.isEmpty()) report("Analysis", problem);
  } else {
    installAnalysis(s);
    if (!revision->final())
      jobPanel_->log(QString("First allocation at %1 s (global errors: %2); measuring them now")
                         .arg(revision->seconds(), 0, 'f', 1)
                         .arg(QString::fromStdString(revision->global_errors().text())));
  }
}

// The first revision of an analysis becomes the document's session.
void MainWindow::installAnalysis(const std::shared_ptr<CompressionSession>& s) {
  // A session file's constraints apply once, to the analysis of its reopening; later runs keep the current.
  const bool reopening = pendingBudget_ > 0 || !pendingConstraints_.empty();
  ConstraintMap constraints = state_->constraints();
  LayerGroups groups = state_->groups();
  QString resolveProblem;
  if (reopening) {
    // The file names options by label: resolved against this analysis.
    constraints.clear();
    groups.clear();
    if (!pendingConstraints_.empty()) {
      try {
        s->constraints_from_json(pendingConstraints_, state_->sessionPath().toStdString(), &constraints, &groups);
      } catch (const std::exception& e) {
        resolveProblem = "Constraints dropped: " + QString::fromStdString(e.what());
        constraints.clear();
        groups.clear();
      }
    }
  }
  const int64_t budget = reopening ? pendingBudget_ : state_->budget();
  const bool wasModified = state_->isModified();
  QString problem = state_->setSession(s, constraints, groups, budget);
  if (problem.isEmpty()) problem = resolveProblem;
  pendingConstraints_.clear();
  state_->setPendingConstraints("");
  pendingBudget_ = 0;
  if (reopening && !wasModified && problem.isEmpty()) state_->markSaved(state_->sessionPath());
  if (!problem.isEmpty()) report("Session constraints", problem);
  if (state_->selectedLayer() < 0 && !s->layers().empty()) state_->setSelectedLayer(0);
}

void MainWindow::startEvaluation() {
  if (!state_->ready()) {
    report("Cannot evaluate", "run the analysis first (the compressed model follows from it)");
    emit evaluationFinished(false);
    return;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  const std::string images = state_->evalImages().toStdString(), labels = state_->evalLabels().toStdString();
  const int64_t limit = compare_->limit();
  auto result = std::make_shared<ComparisonResult>();
  runJob(
      "Evaluation",
      [=](const lorq::JobControl& job) { *result = session->compare(images, labels, limit, 5, alloc, job); },
      [this, result] {
        compare_->setTask(state_->model().task);  // a result without any box or map still shows its task
        compare_->setResult(*result);
        compareDock_->raise();
      },
      &MainWindow::evaluationFinished);
}

bool MainWindow::startRounding(int iterations, int activation_bits) {
  if (!state_->ready()) {
    report("Cannot round", "run the analysis first (rounding learns the chosen layers' codes)");
    emit roundingFinished(false);
    return false;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  RoundingOptions options;
  options.iterations = iterations;
  options.activation_bits = activation_bits;
  auto result = std::make_shared<RoundingSummary>();
  FinalSettings settings;  // what round() finalizes with
  settings.round = true;
  settings.round_iterations = options.iterations;
  settings.round_images = options.images;
  settings.activation_bits = options.activation_bits;
  settings.keep_learned_on_cancel = true;
  return runJob(
      "Adaptive rounding", [=](const lorq::JobControl& job) { *result = session->round(alloc, options, job); },
      [this, result, session, alloc, settings] {
        for (const std::string& w : result->warnings) jobPanel_->log("warning: " + QString::fromStdString(w));
        // A cancelled rounding keeps the layers it finished: say how many, and that the rest stay nearest.
        const QString text =
            result->cancelled
                ? QString("Adaptive rounding cancelled: %1; evaluation and export now use them")
                      .arg(QString::fromStdString(result->message()))
                : QString(
                      "Adaptive rounding: %1 layers, summed reconstruction error %2 → %3 in %4 s; "
                      "evaluation and export now use the rounded model")
                      .arg(result->layers)
                      .arg(result->nearest_error, 0, 'g', 4)
                      .arg(result->learned_error, 0, 'g', 4)
                      .arg(result->seconds, 0, 'f', 1);
        jobPanel_->log(text);
        statusBar()->showMessage(text, 10000);
        if (state_->session() == session) state_->setFinalBuilt(settings, alloc.choice);
      },
      &MainWindow::roundingFinished);
}

bool MainWindow::startSweep(std::vector<double> avgBits, int64_t limit) {
  if (!state_->ready()) {
    report("Cannot sweep budgets", "run the analysis first (the budgets are allocated from it)");
    emit sweepFinished(false);
    return false;
  }
  auto session = state_->session();
  const Constraints constraints = state_->allConstraints();
  SweepRequest request;
  request.eval_images = state_->evalImages().toStdString();
  request.eval_labels = state_->evalLabels().toStdString();
  request.limit = limit;
  request.avg_bits = std::move(avgBits);
  if (request.avg_bits.empty()) {
    // Every half bit between the smallest and the largest useful budget (where the optimal error stops falling).
    const auto& allocator = state_->allocator();
    const auto& curve = state_->curve();
    const int64_t top = curve.empty() ? allocator->max_bytes() : curve.back().bytes;
    request.avg_bits =
        default_sweep_bits(8.0 * allocator->min_bytes() / state_->params(), 8.0 * top / state_->params());
  }
  const SweepSeries* cached = state_->sweeps().find(
      sweep_key(*session, constraints, request.eval_images, request.eval_labels, request.limit));
  const auto known = std::make_shared<SweepSeries>(cached ? *cached : SweepSeries());
  // What was measured so far, handed over from the worker: a cancelled sweep keeps its points.
  struct Partial {
    std::mutex mutex;
    SweepSeries series;
    bool any = false;
  };
  auto partial = std::make_shared<Partial>();
  auto* conn = new QMetaObject::Connection;
  *conn = connect(jobs_, &JobRunner::finished, this,
                  [this, conn, partial, session](const QString&, bool ok, const QString&) {
    disconnect(*conn);
    delete conn;
    std::lock_guard<std::mutex> lock(partial->mutex);
    if (!partial->any || state_->session() != session) return;
    state_->mergeSweep(partial->series);
    const SweepSeries& s = partial->series;
    if (!ok) jobPanel_->log(QString("Sweep stopped: %1 points measured are kept").arg(s.points.size()));
    jobPanel_->log(QString("Sweep on %1 images (%2 calibration images left out); float:%3")
                       .arg(s.images)
                       .arg(s.left_out)
                       .arg(metricsText(s.float_metrics)));
    for (const SweepPoint& p : s.points) {
      jobPanel_->log(QString("  %1 bits: %2 of %3 bytes, predicted error %4,%5%6")
                         .arg(p.avg_bits, 0, 'f', 2)
                         .arg(p.bytes)
                         .arg(p.budget_bytes)
                         .arg(p.predicted_error, 0, 'g', 3)
                         .arg(metricsText(p.metrics))
                         .arg(p.cached ? " (cached)" : ""));
    }
  });
  const bool started = runJob(
      "Sweep",
      [=](const lorq::JobControl& job) {
        run_sweep(*session, constraints, request, known->key.empty() ? nullptr : known.get(), job,
                  [this, partial, session](const SweepSeries& s) {
                    {
                      std::lock_guard<std::mutex> lock(partial->mutex);
                      partial->series = s;
                      partial->any = true;
                    }
                    // Drawn as it is measured: each point reaches the budget plot when its evaluation ends.
                    // (Unless the document moved on to another analysis meanwhile.)
                    QMetaObject::invokeMethod(
                        this,
                        [this, s, session] {
                          if (state_->session() == session) state_->mergeSweep(s);
                        },
                        Qt::QueuedConnection);
                  });
      },
      {}, &MainWindow::sweepFinished);
  if (!started) {
    disconnect(*conn);
    delete conn;
  }
  return started;
}

bool MainWindow::predictImage(const QString& path, int label) {
  if (!state_->ready()) {
    report("Cannot predict", "run the analysis first");
    emit predictionFinished(false);
    return false;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  const int classes = std::max(1, state_->model().num_classes);
  struct Prediction {
    ImageComparison image;
    std::vector<ClassScore> compressedAll;
  };
  auto result = std::make_shared<Prediction>();
  result->image.path = path.toStdString();
  result->image.label = label;
  if (state_->model().task != lorq::TaskKind::Classification) {
    // Boxes above the compare view's lowest threshold (its slider filters them), or both label maps.
    return runJob(
        "Prediction",
        [=](const lorq::JobControl&) {
          const double minScore = ComparisonResult().min_score;
          const lorq::ImagePrediction f = session->predict_image(result->image.path, 5, minScore, nullptr);
          const lorq::ImagePrediction q = session->predict_image(result->image.path, 5, minScore, &alloc);
          ImageComparison& ic = result->image;
          ic.width = f.image_width;
          ic.height = f.image_height;
          ic.float_detections = f.detections;
          ic.compressed_detections = q.detections;
          ic.float_map = f.label_map;
          ic.compressed_map = q.label_map;
          if (!f.label_map.empty()) {
            size_t changed = 0;
            for (size_t i = 0; i < f.label_map.classes.size(); ++i)
              changed += f.label_map.classes[i] != q.label_map.classes[i];
            ic.change = static_cast<double>(changed) / std::max<size_t>(1, f.label_map.classes.size());
          }
        },
        [this, result] {
          compare_->setTask(state_->model().task);
          compare_->showImage(result->image);
          compareDock_->raise();
        },
        &MainWindow::predictionFinished);
  }
  return runJob(
      "Prediction",
      [=](const lorq::JobControl&) {
        // Every class of both models, so the KL, max |Δp| and each float class's Δp are exact.
        const std::vector<ClassScore> floatAll = session->predict(result->image.path, classes, nullptr);
        result->compressedAll = session->predict(result->image.path, classes, &alloc);
        std::map<int, double> compressed;
        for (const ClassScore& c : result->compressedAll) compressed[c.class_index] = c.probability;
        double kl = 0, maxChange = 0;
        for (const ClassScore& f : floatAll) {
          const double q = compressed.count(f.class_index) ? compressed[f.class_index] : 0.0;
          if (f.probability > 0) kl += f.probability * std::log(f.probability / std::max(q, 1e-30));
          maxChange = std::max(maxChange, std::abs(f.probability - q));
        }
        result->image.kl = std::max(0.0, kl);
        result->image.max_prob_change = maxChange;
        const size_t k = std::min<size_t>(5, floatAll.size());
        result->image.float_top.assign(floatAll.begin(), floatAll.begin() + k);
        result->image.compressed_top.assign(result->compressedAll.begin(), result->compressedAll.begin() + k);
      },
      [this, result] {
        compare_->showImage(result->image, &result->compressedAll);
        compareDock_->raise();
      },
      &MainWindow::predictionFinished);
}

bool MainWindow::startExport(const QString& dir) {
  if (!state_->ready()) {
    report("Cannot export", "run the analysis first");
    emit exportFinished(false);
    return false;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  const std::string modelDir = QDir(dir).filePath("model").toStdString();
  return runJob(
      "Export",
      [=](const lorq::JobControl&) {
        QDir().mkpath(QString::fromStdString(modelDir));
        session->export_to(modelDir, alloc);
      },
      [this, dir] {
        // The plots and the report are drawn here, on the UI thread (widgets are not thread-safe).
        const QString problem = writeExportExtras(dir, *state_, budget_, allocation_, compare_->result());
        // The size breakdown report.md carries, in the log too: codes vs the budget, parameters, float parts.
        try {
          const std::string sizes = lorq::format_export_size(lorq::export_size_breakdown(QDir(dir).filePath("model").toStdString()));
          for (const QString& line : QString::fromStdString(sizes).split('\n', Qt::SkipEmptyParts)) jobPanel_->log(line);
        } catch (const std::exception& e) {
          jobPanel_->log("warning: " + QString::fromStdString(e.what()));
        }
        if (!problem.isEmpty())
          report("Export incomplete", problem);
        else
          statusBar()->showMessage("Exported to " + dir, 8000);
      },
      &MainWindow::exportFinished);
}

bool MainWindow::startExportOnnx(const QString& path) {
  if (!state_->ready()) {
    report("Cannot export ONNX", "run the analysis first");
    emit exportFinished(false);
    return false;
  }
  if (!lorq::onnx_export_available()) {
    report("Cannot export ONNX", "this build has no ONNX support (install libonnx-dev and rebuild)");
    emit exportFinished(false);
    return false;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  const std::string out = path.toStdString();
  auto summary = std::make_shared<lorq::OnnxExportSummary>();
  return runJob(
      "Export ONNX",
      [=](const lorq::JobControl&) {
        // The engine's export first (the ONNX writer reads its codes), in a scratch folder beside the file.
        const QString scratch = path + ".lorq-export";
        QDir(scratch).removeRecursively();
        session->export_to(scratch.toStdString(), alloc);
        try {
          *summary = lorq::export_onnx(scratch.toStdString(), out);
        } catch (...) {
          QDir(scratch).removeRecursively();
          throw;
        }
        QDir(scratch).removeRecursively();
      },
      [this, path, summary] {
        const QString text = QString("Exported ONNX %1: %2 bytes (%3 quantized, %4 low-rank, %5 float layers)")
                                 .arg(path)
                                 .arg(summary->file_bytes)
                                 .arg(summary->quantized_layers)
                                 .arg(summary->low_rank_layers)
                                 .arg(summary->float_layers);
        jobPanel_->log(text);
        statusBar()->showMessage(text, 8000);
      },
      &MainWindow::exportFinished);
}

void MainWindow::onExportOnnx() {
  const QString f = QFileDialog::getSaveFileName(this, "Export ONNX", "model.onnx", "ONNX models (*.onnx)");
  if (!f.isEmpty()) startExportOnnx(f);
}

bool MainWindow::saveSession(const QString& path) {
  try {
    save_session_file(path.toStdString(), state_->toSessionFile());
  } catch (const std::exception& e) {
    report("Cannot save the session", QString::fromStdString(e.what()));
    return false;
  }
  state_->markSaved(path);
  addRecent("recent/sessions", path);
  updateTitle();
  statusBar()->showMessage("Saved " + path, 5000);
  return true;
}

bool MainWindow::exportConstraints(const QString& path) {
  if (!state_->ready()) {
    report("Cannot export the constraints", "run the analysis first (pins name the analysis' options)");
    return false;
  }
  try {
    lorq::write_text_atomically(path.toStdString(),
                                state_->session()->constraints_to_json(state_->constraints(), state_->groups()));
  } catch (const std::exception& e) {
    report("Cannot export the constraints", QString::fromStdString(e.what()));
    return false;
  }
  statusBar()->showMessage("Constraints written to " + path, 5000);
  return true;
}

bool MainWindow::importConstraints(const QString& path) {
  if (!state_->ready()) {
    report("Cannot import the constraints", "run the analysis first (pins name the analysis' options)");
    return false;
  }
  QFile file(path);
  if (!file.open(QIODevice::ReadOnly)) {
    report("Cannot import the constraints", QString("%1: cannot open (%2)").arg(path, file.errorString()));
    return false;
  }
  ConstraintMap constraints;
  LayerGroups groups;
  try {
    state_->session()->constraints_from_json(file.readAll().toStdString(), path.toStdString(), &constraints, &groups);
  } catch (const std::exception& e) {
    report("Cannot import the constraints", QString::fromStdString(e.what()));
    return false;
  }
  if (!edit_->replaceConstraints(constraints, groups, "Import constraints from " + QFileInfo(path).fileName()))
    return false;
  statusBar()->showMessage("Constraints read from " + path, 5000);
  return true;
}

bool MainWindow::save(bool saveAs) {
  if (!state_->hasModel()) return false;
  QString path = state_->sessionPath();
  if (saveAs || path.isEmpty()) {
    path = saveNamePrompt_
               ? saveNamePrompt_()
               : QFileDialog::getSaveFileName(this, "Save session", "session.lorq", "LoRQ sessions (*.lorq)");
    if (path.isEmpty()) return false;
    if (QFileInfo(path).suffix().isEmpty()) path += ".lorq";
  }
  return saveSession(path);
}

bool MainWindow::openSession(const QString& path) {
  if (!maybeKeepWork("opening another session")) return false;
  return loadSession(path);
}

bool MainWindow::loadSession(const QString& path) {
  SessionFile f;
  try {
    f = load_session_file(path.toStdString());
  } catch (const std::exception& e) {
    report("Cannot open the session", QString::fromStdString(e.what()));
    return false;
  }
  if (jobs_->running()) {
    report("Cannot open the session", "a job is running; cancel it first");
    return false;
  }
  if (!loadModel(QString::fromStdString(f.model_path), false)) return false;
  try {
    state_->setSweeps(SweepCache::from_json(f.sweeps_json, path.toStdString()));
  } catch (const std::exception& e) {
    jobPanel_->log("warning: " + QString::fromStdString(e.what()) + " (the sweep results are dropped)");
  }
  try {
    state_->setMethods(MethodComparison::from_json(f.methods_json, path.toStdString()), false);
  } catch (const std::exception& e) {
    jobPanel_->log("warning: " + QString::fromStdString(e.what()) + " (the method comparison is dropped)");
  }
  if (!setImages(QString::fromStdString(f.images), QString::fromStdString(f.labels))) return false;
  setEvalImages(QString::fromStdString(f.eval_images), QString::fromStdString(f.eval_labels));
  setSettings(f.settings);
  if (!f.cache_dir.empty()) state_->setCacheDir(QString::fromStdString(f.cache_dir));
  state_->setFinalSettings(f.final_settings, false);  // the settings only: Analysis › Final model… builds it
  if (f.final_settings)
    jobPanel_->log("Session: final model " + describeFinalSettings(*f.final_settings) +
                   " — not built yet (Analysis › Final model…)");
  pendingConstraints_ = f.constraints_json;
  state_->setPendingConstraints(f.constraints_json);  // saved as they are until the analysis resolves them
  pendingBudget_ = f.budget_bytes;
  state_->markSaved(path);
  addRecent("recent/sessions", path);
  updateTitle();
  return startAnalysis();
}

void MainWindow::updateStatus() {
  if (!state_->ready()) {
    allocationStatus_->setText(state_->hasModel() ? "not analyzed" : "");
    return;
  }
  const AllocationResult& a = state_->allocation();
  allocationStatus_->setText(QString("%1 · %2 bits · %3× · predicted error %4 · %5 constraints")
                                 .arg(formatBytes(static_cast<double>(a.bytes)))
                                 .arg(8.0 * a.bytes / state_->params(), 0, 'f', 2)
                                 .arg(4.0 * state_->params() / std::max<int64_t>(1, a.bytes), 0, 'f', 1)
                                 .arg(a.predicted_error, 0, 'g', 3)
                                 .arg(state_->constraints().size()) +
                             " · global errors: " + QString::fromStdString(state_->globalErrors().text()) +
                             finalStatusText());
}

void MainWindow::updateTitle() {
  QString t = "LoRQ Workbench";
  if (state_->hasModel())
    t = QString("%1[*] (%2) — %3").arg(state_->displayName(), QFileInfo(state_->modelPath()).fileName(), t);
  setWindowTitle(t);
  setWindowModified(state_->isModified());
}

void MainWindow::addRecent(const QString& key, const QString& path) {
  QSettings settings;
  QStringList list = settings.value(key).toStringList();
  const QString abs = QFileInfo(path).absoluteFilePath();
  list.removeAll(abs);
  list.prepend(abs);
  while (list.size() > kMaxRecent) list.removeLast();
  settings.setValue(key, list);
  rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu() {
  recentMenu_->clear();
  const QStringList sessions = QSettings().value("recent/sessions").toStringList();
  const QStringList models = QSettings().value("recent/models").toStringList();
  for (const QString& s : sessions) recentMenu_->addAction(s, this, [this, s] { openSession(s); });
  if (!sessions.isEmpty() && !models.isEmpty()) recentMenu_->addSeparator();
  for (const QString& m : models) recentMenu_->addAction("Model: " + m, this, [this, m] { openModel(m); });
  recentMenu_->setEnabled(!sessions.isEmpty() || !models.isEmpty());
}

void MainWindow::onOpenModel() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Open model folder (config.json + model.safetensors)");
  if (!dir.isEmpty()) openModel(dir);
}

void MainWindow::onChooseCalibration() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Calibration image folder");
  if (!dir.isEmpty()) setImages(dir, QString());
}

void MainWindow::onChooseEval() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Evaluation image folder (labels.csv or class folders)");
  if (dir.isEmpty()) return;
  const QString csv = QFileDialog::getOpenFileName(this, "Labels (optional; Cancel for none)", dir, "CSV (*.csv)");
  setEvalImages(dir, csv);
}

void MainWindow::onOpenSession() {
  const QString f = QFileDialog::getOpenFileName(this, "Open session", {}, "LoRQ sessions (*.lorq);;All files (*)");
  if (!f.isEmpty()) openSession(f);
}

void MainWindow::onExport() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Export to folder");
  if (!dir.isEmpty()) startExport(dir);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (!maybeKeepWork("closing")) {
    event->ignore();
    return;
  }
  jobs_->cancelAndWait();  // nothing may outlive the window
  QSettings settings;
  settings.setValue("window/geometry", saveGeometry());
  settings.setValue("window/state", saveState());
  event->accept();
}
