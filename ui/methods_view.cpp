#include "methods_view.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QLabel>
#include <QMenu>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>
#include <algorithm>

#include "format.h"
#include "job_runner.h"
#include "plot_export.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {

QString metricText(const std::vector<MetricValue>& metrics, size_t i) {
  if (i >= metrics.size()) return "-";
  return QString::number(metrics[i].value, 'f', 2) + (metrics[i].percent ? "%" : "");
}

// Under a bar, on two short lines: "MLoRQ + adaptive rounding" is too long for the chart.
QString chartName(const MethodRow& r) {
  QString name = QString::fromStdString(r.method);
  name.replace(" per row", "").replace(" (nearest)", "\nnearest").replace(" + adaptive rounding", "\n+ rounding");
  name.replace(" + LRA-QViT blocks", "\n+ blocks").replace("LRA-QViT ", "LRA-QViT\n").replace("uniform ", "uniform\n");
  return name;
}

QTableWidgetItem* cell(const QString& text, bool number) {
  auto* item = new QTableWidgetItem(text);
  item->setFlags(Qt::ItemIsSelectable | Qt::ItemIsEnabled);
  if (number) item->setTextAlignment(Qt::AlignRight | Qt::AlignVCenter);
  return item;
}

}  // namespace

MethodsView::MethodsView(WorkbenchDocument* document, JobRunner* jobs, QWidget* parent)
    : QWidget(parent), document_(document), jobs_(jobs) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);

  auto* controls = new QHBoxLayout;
  budget_ = new QLabel(this);
  controls->addWidget(budget_);
  actBits_ = new QComboBox(this);
  actBits_->addItem("weights only", 0);
  actBits_->addItem("A8", 8);
  actBits_->addItem("A6", 6);
  actBits_->addItem("A4", 4);
  actBits_->setToolTip("Activation bits (MLoRQ: static per tensor; LRA-QViT: dynamic per token)");
  controls->addWidget(actBits_);
  roundIters_ = new QSpinBox(this);
  roundIters_->setRange(1, 1 << 20);
  roundIters_->setValue(500);
  roundIters_->setPrefix("rounding ");
  roundIters_->setSuffix(" steps/block");
  roundIters_->setToolTip("Adaptive rounding's optimizer steps per block (MLoRQ + adaptive rounding)");
  controls->addWidget(roundIters_);
  lraSteps_ = new QSpinBox(this);
  lraSteps_->setRange(1, 1 << 20);
  lraSteps_->setValue(100);  // LRA-QViT's default distillation steps (lorq/lraqvit/distill.h)
  lraSteps_->setPrefix("LRA-QViT ");
  lraSteps_->setSuffix(" steps");
  lraSteps_->setToolTip("LRA-QViT's distillation and WADS steps");
  controls->addWidget(lraSteps_);
  run_ = new QPushButton("Run comparison", this);
  cancel_ = new QPushButton("Cancel", this);
  controls->addWidget(run_);
  controls->addWidget(cancel_);
  progress_ = new QProgressBar(this);
  progress_->setTextVisible(true);
  controls->addWidget(progress_, 1);
  layout->addLayout(controls);
  state_ = new QLabel(this);
  state_->setObjectName("methodsState");
  state_->setWordWrap(true);
  layout->addWidget(state_);

  auto* split = new QSplitter(Qt::Horizontal, this);
  table_ = new QTableWidget(0, 8, split);
  table_->setObjectName("methodsTable");
  table_->setHorizontalHeaderLabels({"method", "weight B", "avg bits", "metric", "", "images", "time s", "note"});
  table_->setSelectionBehavior(QAbstractItemView::SelectRows);
  table_->setSelectionMode(QAbstractItemView::SingleSelection);
  table_->verticalHeader()->setVisible(false);
  table_->horizontalHeader()->setStretchLastSection(true);
  plot_ = new QCustomPlot(split);
  plot_->setObjectName("methodsPlot");
  plot_->setMinimumSize(260, 150);
  plot_->xAxis->setSubTicks(false);
  plot_->xAxis->grid()->setVisible(false);
  bars_ = new QCPBars(plot_->xAxis, plot_->yAxis);
  bars_->setName("compressed");
  bars_->setWidth(0.6);
  bars_->setBrush(quantColor(4));
  bars_->setPen(QPen(quantColor(4).darker(130)));
  floatLine_ = new QCPItemStraightLine(plot_);
  floatLine_->setPen(QPen(QColor(200, 0, 0), 1.5, Qt::DashLine));
  floatLine_->setVisible(false);
  floatLabel_ = new QCPItemText(plot_);
  floatLabel_->setPositionAlignment(Qt::AlignLeft | Qt::AlignBottom);
  floatLabel_->setColor(QColor(200, 0, 0));
  floatLabel_->setVisible(false);
  split->addWidget(table_);
  split->addWidget(plot_);
  split->setStretchFactor(0, 1);
  split->setStretchFactor(1, 1);
  layout->addWidget(split, 1);
  plot_->setContextMenuPolicy(Qt::CustomContextMenu);
  connect(plot_, &QWidget::customContextMenuRequested, this, [this](const QPoint& at) {
    QMenu menu(this);
    addSavePlotActions(&menu, plot_, "methods", [] { return QList<QCPLayerable*>(); });
    menu.exec(plot_->mapToGlobal(at));
  });

  connect(run_, &QPushButton::clicked, this, &MethodsView::runRequested);
  connect(cancel_, &QPushButton::clicked, jobs_, &JobRunner::cancel);
  connect(table_, &QTableWidget::itemSelectionChanged, this, &MethodsView::onSelectionChanged);
  connect(document_, &WorkbenchDocument::methodsChanged, this, &MethodsView::updateResults);
  connect(document_, &WorkbenchDocument::shownMethodChanged, this, [this] {
    if (document_->shownMethod() < 0 && !filling_) table_->clearSelection();
  });
  for (auto signal :
       {&WorkbenchDocument::sessionChanged, &WorkbenchDocument::allocationChanged, &WorkbenchDocument::documentReset})
    connect(document_, signal, this, &MethodsView::updateControls);
  connect(jobs_, &JobRunner::started, this, &MethodsView::onStarted);
  connect(jobs_, &JobRunner::progress, this, &MethodsView::onProgress);
  connect(jobs_, &JobRunner::finished, this, &MethodsView::onFinished);
  updateControls();
  updateResults();
}

int64_t MethodsView::comparisonBudget(const WorkbenchDocument& document) {
  if (!document.ready()) return 0;
  const auto& a = document.allocator();
  return std::clamp(document.budget(), a->min_bytes(), a->max_bytes());
}

int MethodsView::activationBits() const { return actBits_->currentData().toInt(); }
int MethodsView::roundIterations() const { return roundIters_->value(); }
int MethodsView::lraqvitSteps() const { return lraSteps_->value(); }

void MethodsView::updateControls() {
  run_->setEnabled(document_->ready() && !busy_);
  cancel_->setEnabled(ownJob_);
  if (document_->ready()) {
    const int64_t b = comparisonBudget(*document_);
    budget_->setText(QString("budget %1 (%2 bits)")
                         .arg(formatBytes(static_cast<double>(b)))
                         .arg(8.0 * b / document_->params(), 0, 'f', 2));
  } else {
    budget_->setText("budget: run the analysis first");
  }
}

void MethodsView::updateResults() {
  const MethodComparison& c = document_->methods();
  filling_ = true;
  table_->clearContents();
  table_->setRowCount(static_cast<int>(c.rows.size()) + (c.float_metrics.empty() ? 0 : 1));
  const QString m0 = c.float_metrics.empty() ? "metric" : QString::fromStdString(c.float_metrics[0].name);
  const QString m1 = c.float_metrics.size() > 1 ? QString::fromStdString(c.float_metrics[1].name) : QString();
  table_->setHorizontalHeaderLabels({"method", "weight B", "avg bits", m0, m1, "images", "time s", "note"});
  // Row 0 of the table is the float model when it was evaluated; document rows follow.
  int row = 0;
  if (!c.float_metrics.empty()) {
    const QStringList text = {"float",
                              QString::number(4 * c.compressible_params),
                              "32.000",
                              metricText(c.float_metrics, 0),
                              metricText(c.float_metrics, 1),
                              QString::number(c.float_images),
                              "-",
                              "reference"};
    for (int k = 0; k < text.size(); ++k) table_->setItem(row, k, cell(text[k], k > 0 && k < 7));
    ++row;
  }
  auto ticker = QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText);
  bars_->data()->clear();
  double top = 1;
  for (size_t i = 0; i < c.rows.size(); ++i, ++row) {
    const MethodRow& r = c.rows[i];
    QStringList text = {QString::fromStdString(r.method), "-", "-", "-", "-", "-", "-", QString::fromStdString(r.note)};
    if (r.ran) {
      text[1] = QString::number(r.bytes);
      text[2] = QString::number(r.avg_bits, 'f', 3);
      text[3] = metricText(r.metrics, 0);
      text[4] = metricText(r.metrics, 1);
      text[5] = QString::number(r.images);
      text[6] = QString::number(r.seconds, 'f', 1);
      if (!r.metrics.empty()) {
        bars_->addData(static_cast<double>(i), r.metrics[0].value);
        top = std::max(top, r.metrics[0].value);
      }
    }
    for (int k = 0; k < text.size(); ++k) table_->setItem(row, k, cell(text[k], k > 0 && k < 7));
    if (!r.ran) table_->item(row, 0)->setForeground(QColor(130, 130, 130));
    ticker->addTick(static_cast<double>(i), chartName(r));
  }
  table_->resizeColumnsToContents();
  plot_->xAxis->setTicker(ticker);
  plot_->xAxis->setRange(-0.6, std::max<double>(1, c.rows.size()) - 0.4);
  plot_->yAxis->setLabel(m0);
  const bool haveFloat = !c.float_metrics.empty();
  floatLine_->setVisible(haveFloat);
  floatLabel_->setVisible(haveFloat);
  if (haveFloat) {
    const double f = c.float_metrics[0].value;
    top = std::max(top, f);
    floatLine_->point1->setCoords(0, f);
    floatLine_->point2->setCoords(1, f);
    floatLabel_->position->setCoords(-0.55, f);
    floatLabel_->setText(QString("float %1").arg(metricText(c.float_metrics, 0)));
  }
  plot_->yAxis->setRange(0, top * 1.3);  // room for the float line's label
  plot_->replot(QCustomPlot::rpQueuedReplot);
  filling_ = false;
  if (!ownJob_) {
    if (c.empty())
      state_->setText("Compares the methods at the document's budget; select a row to see its allocation.");
    else
      state_->setText(QString("%1 of %2 methods at %3 bits%4%5")
                          .arg(c.rows.size())
                          .arg(all_methods().size())
                          .arg(c.budget_avg_bits(), 0, 'f', 2)
                          .arg(c.act_bits ? QString(", A%1").arg(c.act_bits) : QString(", weights only"))
                          .arg(c.complete ? "" : " (incomplete: the run was stopped)"));
  }
}

void MethodsView::onSelectionChanged() {
  if (filling_) return;
  const auto rows = table_->selectionModel()->selectedRows();
  const int offset = document_->methods().float_metrics.empty() ? 0 : 1;
  const int row = rows.isEmpty() ? -1 : rows.first().row() - offset;
  document_->setShownMethod(row);
  if (document_->shownMethod() >= 0) emit methodShown(document_->shownMethod());
}

void MethodsView::onStarted(const QString& name) {
  busy_ = true;
  ownJob_ = name == jobName();
  if (ownJob_) {
    progress_->setRange(0, 0);
    methodText_.clear();
    state_->setText("Starting: analysis (from the cache when there)…");
  }
  updateControls();
}

void MethodsView::onProgress(const QString& stage, qint64 done, qint64 total, double, const QString& detail) {
  if (!ownJob_) return;
  if (stage == "methods") {
    progress_->setRange(0, static_cast<int>(total));
    progress_->setValue(static_cast<int>(done));
    methodText_ = detail;
    return;
  }
  state_->setText(QString("%1 — %2 %3/%4")
                      .arg(methodText_.isEmpty() ? QString("preparing") : methodText_, stage)
                      .arg(done)
                      .arg(total));
}

void MethodsView::onFinished(const QString& name, bool ok, const QString& error) {
  const bool own = ownJob_ && name == jobName();
  busy_ = false;
  ownJob_ = false;
  updateControls();
  if (!own) return;
  progress_->setRange(0, 1);
  progress_->setValue(ok ? 1 : 0);
  const MethodComparison& c = document_->methods();
  if (ok)
    updateResults();
  else if (error == "cancelled")
    state_->setText(
        QString("Cancelled: %1 of %2 methods finished (kept)").arg(c.rows.size()).arg(all_methods().size()));
  else
    state_->setText("Failed: " + error);
}
