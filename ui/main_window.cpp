#include "main_window.h"

#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDockWidget>
#include <QElapsedTimer>
#include <QFileDialog>
#include <QFileInfo>
#include <QInputDialog>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QScrollArea>
#include <QSettings>
#include <QStandardPaths>
#include <QStatusBar>
#include <QTimer>
#include <QUndoStack>

#include "allocation_view.h"
#include "budget_view.h"
#include "commands.h"
#include "compare_view.h"
#include "export_report.h"
#include "format.h"
#include "job_panel.h"
#include "job_runner.h"
#include "layers_view.h"
#include "pareto_view.h"
#include "session_panel.h"
#include "workbench_state.h"

using namespace lorq::api;

namespace {
constexpr int kMaxRecent = 8;

QDockWidget* dock(QMainWindow* window, const QString& title, const QString& name, QWidget* content) {
  auto* d = new QDockWidget(title, window);
  d->setObjectName(name);  // saveState/restoreState key
  d->setWidget(content);
  return d;
}
}  // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle("LoRQ Workbench");
  cacheDir_ = QStandardPaths::writableLocation(QStandardPaths::CacheLocation) + "/analysis";
  state_ = new WorkbenchState(this);
  undo_ = new QUndoStack(this);
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
  connect(state_, &WorkbenchState::allocationChanged, this, &MainWindow::updateStatus);
  connect(state_, &WorkbenchState::allocationChanged, compare_, &CompareView::markStale);
  connect(undo_, &QUndoStack::cleanChanged, this, &MainWindow::updateTitle);
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
  resizeDocks(docks({"allocationDock"}), {260}, Qt::Vertical);
  resizeDocks(docks({"paretoDock", "budgetDock"}), {400, 330}, Qt::Vertical);
  findChild<QDockWidget*>("allocationDock")->raise();
}

MainWindow::~MainWindow() { jobs_->cancelAndWait(); }

void MainWindow::buildDocks() {
  session_ = new SessionPanel(this);
  auto* sessionScroll = new QScrollArea(this);  // the panel scrolls rather than squeezing its fields
  sessionScroll->setWidget(session_);
  sessionScroll->setWidgetResizable(true);
  sessionScroll->setFrameShape(QFrame::NoFrame);
  sessionScroll->setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
  pareto_ = new ParetoView(state_, edit_, this);
  budget_ = new BudgetView(state_, edit_, this);
  allocation_ = new AllocationView(state_, edit_, this);
  compare_ = new CompareView(this);
  jobPanel_ = new JobPanel(jobs_, this);

  setDockOptions(QMainWindow::AnimatedDocks | QMainWindow::AllowTabbedDocks | QMainWindow::AllowNestedDocks);
  auto* sessionDock = dock(this, "Session", "sessionDock", sessionScroll);
  auto* paretoDock = dock(this, "Layer options (Pareto)", "paretoDock", pareto_);
  auto* budgetDock = dock(this, "Budget", "budgetDock", budget_);
  auto* allocationDock = dock(this, "Allocation", "allocationDock", allocation_);
  compareDock_ = dock(this, "Compare", "compareDock", compare_);
  jobsDock_ = dock(this, "Jobs", "jobsDock", jobPanel_);
  addDockWidget(Qt::LeftDockWidgetArea, sessionDock);
  addDockWidget(Qt::RightDockWidgetArea, paretoDock);
  addDockWidget(Qt::RightDockWidgetArea, budgetDock);
  addDockWidget(Qt::BottomDockWidgetArea, allocationDock);
  addDockWidget(Qt::BottomDockWidgetArea, compareDock_);
  addDockWidget(Qt::BottomDockWidgetArea, jobsDock_);
  tabifyDockWidget(allocationDock, compareDock_);
  tabifyDockWidget(compareDock_, jobsDock_);
  allocationDock->raise();

  connect(session_, &SessionPanel::openModelRequested, this, &MainWindow::onOpenModel);
  connect(session_, &SessionPanel::openDemoRequested, this, &MainWindow::openDemo);
  connect(session_, &SessionPanel::chooseCalibrationRequested, this, &MainWindow::onChooseCalibration);
  connect(session_, &SessionPanel::chooseEvalRequested, this, &MainWindow::onChooseEval);
  connect(session_, &SessionPanel::analyzeRequested, this, &MainWindow::startAnalysis);
  connect(compare_, &CompareView::evaluateRequested, this, &MainWindow::startEvaluation);
  connect(compare_, &CompareView::openImageRequested, this, &MainWindow::predictImage);
  connect(jobs_, &JobRunner::started, this, [this] {
    if (!compareDock_->isVisible() || compareDock_->visibleRegion().isEmpty()) jobsDock_->raise();
  });
}

void MainWindow::buildMenus() {
  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("&Open session…", QKeySequence::Open, this, &MainWindow::onOpenSession);
  file->addAction("&Save session", QKeySequence::Save, this, [this] { onSaveSession(false); });
  file->addAction("Save session &as…", QKeySequence::SaveAs, this, [this] { onSaveSession(true); });
  recentMenu_ = file->addMenu("&Recent sessions");
  rebuildRecentMenu();
  file->addSeparator();
  file->addAction("Open &model…", QKeySequence("Ctrl+M"), this, &MainWindow::onOpenModel);
  file->addAction("Open &demo", QKeySequence("Ctrl+D"), this, &MainWindow::openDemo);
  file->addAction("Calibration &images…", QKeySequence("Ctrl+I"), this, &MainWindow::onChooseCalibration);
  file->addAction("&Evaluation images…", QKeySequence("Ctrl+E"), this, &MainWindow::onChooseEval);
  file->addSeparator();
  file->addAction("E&xport…", QKeySequence("Ctrl+Shift+E"), this, &MainWindow::onExport);
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

  QMenu* analysis = menuBar()->addMenu("&Analysis");
  analysis->addAction("&Run analysis", QKeySequence("F5"), this, &MainWindow::startAnalysis);
  analysis->addAction("&Evaluate float vs compressed", QKeySequence("F6"), this, &MainWindow::startEvaluation);
  analysis->addAction("Adaptive &rounding…", QKeySequence("F7"), this, [this] {
    bool ok = false;
    const int iterations = QInputDialog::getInt(this, "Adaptive rounding",
                                                "Optimizer steps per layer (the spec uses 20000; 500 takes about\n"
                                                "7 minutes for DeiT-Tiny on 2 cores):",
                                                500, 10, 100000, 100, &ok);
    if (!ok) return;
    const QStringList bits{"weights only", "activations at 8 bits", "activations at 6 bits", "activations at 4 bits"};
    const QString choice =
        QInputDialog::getItem(this, "Adaptive rounding", "Activation quantization:", bits, 0, false, &ok);
    if (!ok) return;
    const int index = bits.indexOf(choice);
    startRounding(iterations, index == 0 ? 0 : index == 1 ? 8 : index == 2 ? 6 : 4);
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
  const ModelSummary& s = handle->summary();
  modelPath_ = path;
  undo_->clear();
  state_->setModel(s);
  session_->setModelText(path, QString("%1 — %2 blocks, dim %3, %4 classes, %5 px; %6 layers, %7 M weights")
                                   .arg(QString::fromStdString(s.architecture))
                                   .arg(s.depth)
                                   .arg(s.embed_dim)
                                   .arg(s.num_classes)
                                   .arg(s.image_size)
                                   .arg(s.layers.size())
                                   .arg(s.compressible_params / 1e6, 0, 'f', 2));
  session_->setAnalysisText("Not analyzed");
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

bool MainWindow::setImages(const QString& images, const QString& labels) {
  const QString problem = session_->setCalibration(images, labels);
  if (!problem.isEmpty()) {
    report("Cannot use the images", problem);
    return false;
  }
  return true;
}

void MainWindow::setEvalImages(const QString& images, const QString& labels) { session_->setEval(images, labels); }

void MainWindow::setSettings(const AnalysisSettings& settings) { session_->setSettings(settings); }

bool MainWindow::jobRunning() const { return jobs_->running(); }

bool MainWindow::evaluationRunning() const { return jobs_->running() && jobs_->currentJob() == "Evaluation"; }

bool MainWindow::startAnalysis() {
  if (modelPath_.isEmpty() || session_->calibrationImages().isEmpty()) {
    report("Cannot analyze", "open a model and choose calibration images first");
    emit analysisFinished(false);
    return false;
  }
  const std::string model = modelPath_.toStdString(), images = session_->calibrationImages().toStdString(),
                    labels = session_->calibrationLabels().toStdString(), cache = cacheDir_.toStdString();
  const AnalysisSettings settings = session_->settings();
  auto result = std::make_shared<std::shared_ptr<CompressionSession>>();
  const bool started = jobs_->start(
      "Analysis",
      [=](const lorq::JobControl& job) {
        auto s = CompressionSession::open(model, images, labels, settings, cache);
        s->analyze(job);
        *result = s;
      },
      [this, result] {
        const auto& s = *result;
        undo_->clear();  // edits refer to the previous analysis' options
        // A session file's constraints name options by label: resolved against this analysis.
        lorq::api::ConstraintMap pending;
        QString resolveProblem;
        if (!pendingConstraints_.empty()) {
          try {
            pending = s->parse_constraints(pendingConstraints_, sessionPath_.toStdString()).layers;
          } catch (const std::exception& e) {
            resolveProblem = QString::fromStdString(e.what());
          }
        }
        QString problem = state_->setSession(s, pending, pendingBudget_);
        if (!resolveProblem.isEmpty()) problem = "Constraints dropped: " + resolveProblem;
        pendingConstraints_.clear();
        pendingBudget_ = 0;
        if (!problem.isEmpty()) report("Session constraints", problem);
        QString text;
        for (const auto& [stage, sec] : s->stage_seconds())
          text += QString("%1 %2 s · ").arg(QString::fromStdString(stage)).arg(sec, 0, 'f', 1);
        for (const std::string& w : s->warnings()) jobPanel_->log("warning: " + QString::fromStdString(w));
        text += QString("%1 layers, %2 calibration images").arg(s->layers().size()).arg(s->calibration_files().size());
        if (!s->warnings().empty()) text += QString("<br>%1 warnings (see Jobs)").arg(s->warnings().size());
        session_->setAnalysisText(text);
        if (state_->selectedLayer() < 0 && !s->layers().empty()) state_->setSelectedLayer(0);
      });
  if (!started) {
    statusBar()->showMessage("A job is running; cancel it first");
    emit analysisFinished(false);
    return false;
  }
  // One-shot: the job's end reports the analysis outcome.
  auto* conn = new QMetaObject::Connection;
  *conn = connect(jobs_, &JobRunner::finished, this, [this, conn](const QString&, bool ok) {
    disconnect(*conn);
    delete conn;
    emit analysisFinished(ok);
  });
  return true;
}

void MainWindow::startEvaluation() {
  if (!state_->ready()) {
    report("Cannot evaluate", "run the analysis first (the compressed model follows from it)");
    emit evaluationFinished(false);
    return;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  const std::string images = session_->evalImages().toStdString(), labels = session_->evalLabels().toStdString();
  const int64_t limit = compare_->limit();
  auto result = std::make_shared<ComparisonResult>();
  const bool started = jobs_->start(
      "Evaluation",
      [=](const lorq::JobControl& job) { *result = session->compare(images, labels, limit, 5, alloc, job); },
      [this, result] {
        compare_->setResult(*result);
        compareDock_->raise();
      });
  if (!started) {
    statusBar()->showMessage("A job is running; cancel it first");
    emit evaluationFinished(false);
    return;
  }
  auto* conn = new QMetaObject::Connection;
  *conn = connect(jobs_, &JobRunner::finished, this, [this, conn](const QString&, bool ok) {
    disconnect(*conn);
    delete conn;
    emit evaluationFinished(ok);
  });
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
  const bool started = jobs_->start(
      "Adaptive rounding", [=](const lorq::JobControl& job) { *result = session->round(alloc, options, job); },
      [this, result] {
        for (const std::string& w : result->warnings) jobPanel_->log("warning: " + QString::fromStdString(w));
        const QString text = QString(
                                 "Adaptive rounding: %1 layers, summed reconstruction error %2 → %3 in %4 s; "
                                 "evaluation and export now use the rounded model")
                                 .arg(result->layers)
                                 .arg(result->nearest_error, 0, 'g', 4)
                                 .arg(result->learned_error, 0, 'g', 4)
                                 .arg(result->seconds, 0, 'f', 1);
        jobPanel_->log(text);
        statusBar()->showMessage(text, 10000);
      });
  if (!started) {
    statusBar()->showMessage("A job is running; cancel it first");
    emit roundingFinished(false);
    return false;
  }
  auto* conn = new QMetaObject::Connection;
  *conn = connect(jobs_, &JobRunner::finished, this, [this, conn](const QString&, bool ok) {
    disconnect(*conn);
    delete conn;
    emit roundingFinished(ok);
  });
  return true;
}

void MainWindow::predictImage(const QString& path) {
  if (!state_->ready()) {
    report("Cannot predict", "run the analysis first");
    return;
  }
  auto session = state_->session();
  const AllocationResult alloc = state_->allocation();
  auto result = std::make_shared<ImageComparison>();
  result->path = path.toStdString();
  jobs_->start(
      "Prediction",
      [=](const lorq::JobControl&) {
        result->float_top = session->predict(result->path, 5, nullptr);
        result->compressed_top = session->predict(result->path, 5, &alloc);
      },
      [this, result] {
        compare_->showImage(*result);
        compareDock_->raise();
      });
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
  const bool started = jobs_->start(
      "Export",
      [=](const lorq::JobControl&) {
        QDir().mkpath(QString::fromStdString(modelDir));
        session->export_to(modelDir, alloc);
      },
      [this, dir] {
        // The plots and the report are drawn here, on the UI thread (widgets are not thread-safe).
        const QString problem = writeExportExtras(dir, *state_, budget_, allocation_, compare_->result());
        if (!problem.isEmpty())
          report("Export incomplete", problem);
        else
          statusBar()->showMessage("Exported to " + dir, 8000);
      });
  if (!started) {
    statusBar()->showMessage("A job is running; cancel it first");
    emit exportFinished(false);
    return false;
  }
  auto* conn = new QMetaObject::Connection;
  *conn = connect(jobs_, &JobRunner::finished, this, [this, conn](const QString&, bool ok) {
    disconnect(*conn);
    delete conn;
    emit exportFinished(ok);
  });
  return true;
}

bool MainWindow::saveSession(const QString& path) {
  SessionFile f;
  f.model_path = modelPath_.toStdString();
  f.images = session_->calibrationImages().toStdString();
  f.labels = session_->calibrationLabels().toStdString();
  if (session_->evalImages() != session_->calibrationImages()) {
    f.eval_images = session_->evalImages().toStdString();
    f.eval_labels = session_->evalLabels().toStdString();
  }
  f.cache_dir = cacheDir_.toStdString();
  f.settings = session_->settings();
  f.budget_bytes = state_->ready() ? state_->budget() : 0;
  if (state_->ready()) {
    lorq::api::Constraints c;
    c.layers = state_->constraints();
    f.constraints_json = state_->session()->constraints_json(c);
  }
  try {
    save_session_file(path.toStdString(), f);
  } catch (const std::exception& e) {
    report("Cannot save the session", QString::fromStdString(e.what()));
    return false;
  }
  sessionPath_ = path;
  undo_->setClean();
  addRecent("recent/sessions", path);
  updateTitle();
  statusBar()->showMessage("Saved " + path, 5000);
  return true;
}

bool MainWindow::openSession(const QString& path) {
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
  if (!openModel(QString::fromStdString(f.model_path))) return false;
  if (!setImages(QString::fromStdString(f.images), QString::fromStdString(f.labels))) return false;
  setEvalImages(QString::fromStdString(f.eval_images), QString::fromStdString(f.eval_labels));
  setSettings(f.settings);
  if (!f.cache_dir.empty()) cacheDir_ = QString::fromStdString(f.cache_dir);
  pendingConstraints_ = f.constraints_json;
  pendingBudget_ = f.budget_bytes;
  sessionPath_ = path;
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
                                 .arg(state_->constraints().size()));
}

void MainWindow::updateTitle() {
  QString t = "LoRQ Workbench";
  if (!sessionPath_.isEmpty())
    t = QFileInfo(sessionPath_).fileName() + "[*] — " + t;
  else if (!modelPath_.isEmpty())
    t = QFileInfo(modelPath_).fileName() + "[*] — " + t;
  setWindowTitle(t);
  setWindowModified(!undo_->isClean());
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

bool MainWindow::onSaveSession(bool saveAs) {
  QString path = sessionPath_;
  if (saveAs || path.isEmpty()) {
    path = QFileDialog::getSaveFileName(this, "Save session", "session.lorq", "LoRQ sessions (*.lorq)");
    if (path.isEmpty()) return false;
    if (QFileInfo(path).suffix().isEmpty()) path += ".lorq";
  }
  return saveSession(path);
}

void MainWindow::onExport() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Export to folder");
  if (!dir.isEmpty()) startExport(dir);
}

void MainWindow::closeEvent(QCloseEvent* event) {
  if (jobs_->running()) {
    statusBar()->showMessage("Cancelling " + jobs_->currentJob() + "…");
    jobs_->cancelAndWait();  // the engine stops at its next safe point
  }
  QSettings settings;
  settings.setValue("window/geometry", saveGeometry());
  settings.setValue("window/state", saveState());
  event->accept();
}
