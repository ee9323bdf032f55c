#include "main_window.h"

#include <QCloseEvent>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QMenuBar>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QStatusBar>
#include <QTableWidget>
#include <QVBoxLayout>
#include <QtConcurrent>

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent) {
  setWindowTitle("LoRQ Workbench");
  auto* central = new QWidget(this);
  auto* layout = new QVBoxLayout(central);
  modelLabel_ = new QLabel("No model loaded", central);
  layers_ = new QTableWidget(0, 7, central);
  layers_->setHorizontalHeaderLabels({"#", "Layer", "Shape", "Parameters", "fp32 MB", "Low rank", "Block"});
  layers_->horizontalHeader()->setSectionResizeMode(1, QHeaderView::Stretch);
  layers_->verticalHeader()->hide();
  layers_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  layers_->setSelectionBehavior(QAbstractItemView::SelectRows);
  layers_->setSortingEnabled(true);
  auto* row = new QHBoxLayout();
  evalButton_ = new QPushButton("Evaluate", central);
  cancelButton_ = new QPushButton("Cancel", central);
  cancelButton_->setEnabled(false);
  progress_ = new QProgressBar(central);
  resultLabel_ = new QLabel(central);
  row->addWidget(evalButton_);
  row->addWidget(cancelButton_);
  row->addWidget(progress_, 1);
  layout->addWidget(modelLabel_);
  layout->addWidget(layers_, 1);
  layout->addLayout(row);
  layout->addWidget(resultLabel_);
  setCentralWidget(central);

  QMenu* file = menuBar()->addMenu("&File");
  file->addAction("&Open model...", QKeySequence::Open, this, &MainWindow::onOpenModel);
  file->addAction("Open &images...", QKeySequence("Ctrl+I"), this, &MainWindow::onOpenImages);
  file->addSeparator();
  file->addAction("&Quit", QKeySequence::Quit, this, &QWidget::close);

  watcher_ = new QFutureWatcher<lorq::api::EvalSummary>(this);
  connect(watcher_, &QFutureWatcherBase::finished, this, &MainWindow::onEvaluationDone);
  connect(this, &MainWindow::progressChanged, this, [this](qint64 done, qint64 total) {
    progress_->setRange(0, static_cast<int>(total));
    progress_->setValue(static_cast<int>(done));
  });
  connect(evalButton_, &QPushButton::clicked, this, &MainWindow::startEvaluation);
  connect(cancelButton_, &QPushButton::clicked, this, [this] { cancel_ = true; });
  statusBar()->showMessage("Ready");
  resize(900, 620);
}

MainWindow::~MainWindow() {
  cancel_ = true;
  watcher_->waitForFinished();
}

bool MainWindow::openModel(const QString& path, bool quiet) {
  try {
    model_ = lorq::api::ModelHandle::open(path.toStdString());
  } catch (const std::exception& e) {
    lastError_ = QString::fromStdString(e.what());
    if (quiet) {
      statusBar()->showMessage(lastError_);
    } else {
      QMessageBox::warning(this, "Cannot open the model", lastError_);
    }
    return false;
  }
  const lorq::api::ModelSummary& s = model_->summary();
  modelLabel_->setText(QString("<b>%1</b> — %2 blocks, dim %3, %4 classes, %5x%5 input; %6 compressible layers, "
                               "%7 M weights")
                           .arg(QString::fromStdString(s.architecture))
                           .arg(s.depth)
                           .arg(s.embed_dim)
                           .arg(s.num_classes)
                           .arg(s.image_size)
                           .arg(s.layers.size())
                           .arg(s.compressible_params / 1e6, 0, 'f', 2));
  layers_->setSortingEnabled(false);
  layers_->setRowCount(static_cast<int>(s.layers.size()));
  for (int i = 0; i < static_cast<int>(s.layers.size()); ++i) {
    const auto& l = s.layers[i];
    auto num = [](double v) {
      auto* item = new QTableWidgetItem();
      item->setData(Qt::DisplayRole, v);
      return item;
    };
    layers_->setItem(i, 0, num(i));
    layers_->setItem(i, 1, new QTableWidgetItem(QString::fromStdString(l.name)));
    layers_->setItem(i, 2, new QTableWidgetItem(QString("%1 x %2").arg(l.out_features).arg(l.in_features)));
    layers_->setItem(i, 3, num(static_cast<double>(l.params)));
    layers_->setItem(i, 4, num(l.fp32_mb));
    layers_->setItem(i, 5, new QTableWidgetItem(l.low_rank_allowed ? "yes" : "no"));
    layers_->setItem(i, 6, num(l.stage));
  }
  layers_->setSortingEnabled(true);
  layers_->sortByColumn(0, Qt::AscendingOrder);  // network order until the user sorts otherwise
  statusBar()->showMessage("Loaded " + path);
  return true;
}

void MainWindow::setImages(const QString& images, const QString& labels) {
  images_ = images;
  labels_ = labels;
  resultLabel_->setText("Images: " + images);
}

bool MainWindow::evaluationRunning() const { return watcher_->isRunning(); }

void MainWindow::startEvaluation() {
  if (!model_ || images_.isEmpty()) {
    statusBar()->showMessage("Open a model and an image folder first");
    emit evaluationFinished(false);
    return;
  }
  if (watcher_->isRunning()) return;
  cancel_ = false;
  evalButton_->setEnabled(false);
  cancelButton_->setEnabled(true);
  auto model = model_;
  const std::string images = images_.toStdString(), labels = labels_.toStdString();
  watcher_->setFuture(QtConcurrent::run([this, model, images, labels] {
    lorq::JobControl job;
    job.cancel = &cancel_;
    job.progress = [this](const lorq::Progress& p) { emit progressChanged(p.done, p.total); };
    return model->evaluate(images, labels, 0, job);
  }));
}

void MainWindow::onEvaluationDone() {
  evalButton_->setEnabled(true);
  cancelButton_->setEnabled(false);
  try {
    const lorq::api::EvalSummary r = watcher_->result();
    QString text = QString("%1 images, %2 images/s").arg(r.images).arg(r.images_per_s, 0, 'f', 1);
    if (r.labeled) text += QString(" — top-1 %1%, top-5 %2%").arg(r.top1_pct, 0, 'f', 2).arg(r.top5_pct, 0, 'f', 2);
    if (!r.failed.empty()) text += QString(" (%1 unreadable)").arg(r.failed.size());
    resultLabel_->setText(text);
    statusBar()->showMessage("Evaluation finished");
    emit evaluationFinished(true);
  } catch (const std::exception& e) {
    const QString msg = QString::fromStdString(e.what());
    statusBar()->showMessage(msg == "cancelled" ? "Evaluation cancelled" : "Evaluation failed: " + msg);
    emit evaluationFinished(false);
  }
}

void MainWindow::onOpenModel() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Open model folder (config.json + model.safetensors)");
  if (!dir.isEmpty()) openModel(dir);
}

void MainWindow::onOpenImages() {
  const QString dir = QFileDialog::getExistingDirectory(this, "Open image folder");
  if (!dir.isEmpty()) setImages(dir, QString());
}

void MainWindow::closeEvent(QCloseEvent* event) {
  cancel_ = true;  // a running job stops at its next batch
  watcher_->waitForFinished();
  event->accept();
}
