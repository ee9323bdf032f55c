#include "budget_view.h"

#include <qcustomplot.h>

#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QSignalBlocker>
#include <QSlider>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>

#include "commands.h"
#include "format.h"
#include "plot_export.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {
QDoubleSpinBox* spinBox(QWidget* parent, double lo, double hi, int decimals, double step, const QString& suffix) {
  auto* s = new QDoubleSpinBox(parent);
  s->setRange(lo, hi);
  s->setDecimals(decimals);
  s->setSingleStep(step);
  s->setSuffix(suffix);
  s->setKeyboardTracking(false);  // commit on Enter / focus out / arrows, not on every keystroke
  s->setEnabled(false);
  return s;
}
}  // namespace

BudgetView::BudgetView(WorkbenchDocument* state, EditActions* edit, QWidget* parent)
    : QWidget(parent), state_(state), edit_(edit) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  plot_ = new QCustomPlot(this);
  // Right-click: measure accuracy at the budget under the pointer, or every half bit, then save the plot.
  plot_->setContextMenuPolicy(Qt::CustomContextMenu);
  connect(plot_, &QWidget::customContextMenuRequested, this, [this](const QPoint& pos) {
    QMenu menu(plot_);
    if (state_->ready()) {
      const double bits = avgBitsAt(pos.x());
      menu.addAction(QString("Measure accuracy at %1 bits").arg(bits, 0, 'f', 2), this,
                     [this, bits] { emit sweepRequested({bits}); });
      menu.addAction("Measure accuracy every half bit", this, [this] { emit sweepRequested({}); });
      menu.addSeparator();
    }
    addSavePlotActions(&menu, plot_, "budget");
    menu.exec(plot_->mapToGlobal(pos));
  });
  plot_->setObjectName("budgetPlot");
  plot_->setMinimumSize(240, 120);  // small enough for a 1280x760 window
  plot_->xAxis->setLabel("memory of the compressed layers (MB)");
  plot_->xAxis2->setLabel("average bits per weight");
  plot_->xAxis2->setVisible(true);
  plot_->yAxis->setLabel("pred. error");  // short: the plot may be short at laptop size
  plot_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  auto ticker = QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog);
  ticker->setTickCount(3);  // readable even when the plot is short
  plot_->yAxis->setTicker(ticker);
  plot_->yAxis->setNumberFormat("eb");
  plot_->yAxis->setNumberPrecision(0);
  // The top axis shows the same range in average bits.
  connect(plot_->xAxis, qOverload<const QCPRange&>(&QCPAxis::rangeChanged), this, [this](const QCPRange& r) {
    const double k = state_->params() > 0 ? 8e6 / state_->params() : 1;
    plot_->xAxis2->setRange(r.lower * k, r.upper * k);
  });
  plot_->setPlottingHints(QCP::phFastPolylines | QCP::phCacheLabels);
  // The budget marker lives on its own buffered layer: a slider step redraws only it, not the curve and axes.
  plot_->addLayer("marker", plot_->layer("main"), QCustomPlot::limAbove);
  plot_->layer("marker")->setMode(QCPLayer::lmBuffered);
  curve_ = plot_->addGraph();
  curve_->setLineStyle(QCPGraph::lsStepLeft);
  curve_->setPen(QPen(QColor(40, 90, 160), 1.8));
  curve_->setBrush(QColor(40, 90, 160, 25));
  point_ = plot_->addGraph();
  point_->setLineStyle(QCPGraph::lsNone);
  point_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(QColor(200, 30, 30), 2.5), Qt::white, 11));
  budgetLine_ = new QCPItemStraightLine(plot_);
  budgetLine_->setPen(QPen(QColor(200, 30, 30), 1.2, Qt::DashLine));
  budgetLine_->setVisible(false);
  point_->setLayer("marker");
  budgetLine_->setLayer("marker");
  // Measured accuracy (a sweep) on the right axis, beside the predicted error.
  sweep_ = plot_->addGraph(plot_->xAxis, plot_->yAxis2);
  sweep_->setPen(QPen(QColor(30, 140, 60), 1.6));
  sweep_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, QPen(QColor(30, 140, 60), 1.6), Qt::white, 8));
  float_ = plot_->addGraph(plot_->xAxis, plot_->yAxis2);
  float_->setPen(QPen(QColor(30, 140, 60), 1.2, Qt::DashLine));
  layout->addWidget(plot_, 1);

  slider_ = new QSlider(Qt::Horizontal, this);
  slider_->setRange(0, kSliderSteps);
  slider_->setEnabled(false);
  slider_->setToolTip("Memory budget: drag to re-solve the exact allocation");
  slider_->setObjectName("budgetSlider");
  layout->addWidget(slider_);

  auto* row = new QHBoxLayout();
  bits_ = spinBox(this, 0.01, 32, 3, 0.125, " bits");
  mb_ = spinBox(this, 0.0, 1e6, 4, 0.01, " MB");
  ratio_ = spinBox(this, 1, 1000, 2, 0.25, " ×");
  bits_->setToolTip("Average bits per compressed weight");
  ratio_->setToolTip("Compression ratio against fp32");
  row->addWidget(new QLabel("Budget:", this));
  row->addWidget(bits_);
  row->addWidget(mb_);
  row->addWidget(ratio_);
  row->addStretch(1);
  layout->addLayout(row);
  summary_ = new QLabel("Run the analysis to set a budget", this);
  // One line (the whole text is its tooltip, and the status bar repeats it): the curve keeps the height.
  summary_->setSizePolicy(QSizePolicy::Ignored, QSizePolicy::Preferred);
  layout->addWidget(summary_);

  connect(slider_, &QSlider::valueChanged, this, &BudgetView::onSlider);
  // A drag (press .. release) is one undo step; the next drag is another.
  connect(slider_, &QSlider::sliderPressed, edit_, &EditActions::beginGesture);
  connect(slider_, &QSlider::sliderReleased, edit_, &EditActions::endGesture);
  connect(bits_, qOverload<double>(&QDoubleSpinBox::valueChanged), this,
          [this](double v) { edit_->setBudget(budget_bytes_for_avg_bits(v, state_->params())); });
  connect(mb_, qOverload<double>(&QDoubleSpinBox::valueChanged), this,
          [this](double v) { edit_->setBudget(static_cast<int64_t>(std::llround(v * 1e6))); });
  connect(ratio_, qOverload<double>(&QDoubleSpinBox::valueChanged), this,
          [this](double v) { edit_->setBudget(budget_bytes_for_ratio(v, state_->params())); });
  connect(plot_, &QCustomPlot::mousePress, this, &BudgetView::onPlotClick);
  connect(state_, &WorkbenchDocument::sessionChanged, this, &BudgetView::onSession);
  connect(state_, &WorkbenchDocument::constraintsChanged, this, &BudgetView::onSession);
  connect(state_, &WorkbenchDocument::curveChanged, this, &BudgetView::onCurve);
  connect(state_, &WorkbenchDocument::allocationChanged, this, &BudgetView::onAllocation);
  for (auto signal : {&WorkbenchDocument::sweepsChanged, &WorkbenchDocument::constraintsChanged,
                      &WorkbenchDocument::sessionChanged, &WorkbenchDocument::sourcesChanged})
    connect(state_, signal, this, &BudgetView::onSweeps);
}

double BudgetView::avgBitsAt(int pixelX) const {
  const auto& a = state_->allocator();
  if (!a || state_->params() <= 0) return 0;
  const double bytes = std::clamp(plot_->xAxis->pixelToCoord(pixelX) * 1e6, static_cast<double>(a->min_bytes()),
                                  static_cast<double>(a->max_bytes()));
  return 8.0 * bytes / state_->params();
}

void BudgetView::onSweeps() {
  sweep_->data()->clear();
  float_->data()->clear();
  const SweepSeries* s = state_->currentSweep();
  const bool shown = s && !s->points.empty() && !s->float_metrics.empty();
  plot_->yAxis2->setVisible(shown);
  if (shown) {
    // The task's first metric (top-1 for classifiers; mAP or mIoU for other tasks).
    const MetricValue& f = s->float_metrics.front();
    double lo = f.value, hi = f.value;
    for (const SweepPoint& p : s->points)
      if (!p.metrics.empty()) {
        sweep_->addData(p.bytes / 1e6, p.metrics.front().value);
        lo = std::min(lo, p.metrics.front().value);
        hi = std::max(hi, p.metrics.front().value);
      }
    const double x0 = std::min(plot_->xAxis->range().lower, s->points.front().bytes / 1e6);
    const double x1 = std::max(plot_->xAxis->range().upper, s->points.back().bytes / 1e6);
    float_->addData(x0, f.value);
    float_->addData(x1, f.value);
    plot_->yAxis2->setLabel(
        QString("measured %1%2 (float dashed)").arg(QString::fromStdString(f.name), f.percent ? " %" : ""));
    const double pad = std::max(1.0, 0.08 * (hi - lo));
    plot_->yAxis2->setRange(lo - pad, hi + pad);
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

int64_t BudgetView::sliderToBytes(int value) const {
  const auto& a = state_->allocator();
  if (!a) return 0;
  const double t = static_cast<double>(value) / kSliderSteps;
  return a->min_bytes() + static_cast<int64_t>(std::llround(t * (a->max_bytes() - a->min_bytes())));
}

int BudgetView::bytesToSlider(int64_t bytes) const {
  const auto& a = state_->allocator();
  if (!a || a->max_bytes() <= a->min_bytes()) return 0;
  const double t = static_cast<double>(bytes - a->min_bytes()) / (a->max_bytes() - a->min_bytes());
  return static_cast<int>(std::lround(std::clamp(t, 0.0, 1.0) * kSliderSteps));
}

void BudgetView::onSession() {
  const bool ready = state_->ready();
  for (QWidget* w : {static_cast<QWidget*>(slider_), static_cast<QWidget*>(bits_), static_cast<QWidget*>(mb_),
                     static_cast<QWidget*>(ratio_)})
    w->setEnabled(ready);
  if (ready) {
    const auto& a = state_->allocator();
    const int64_t p = state_->params();
    const QSignalBlocker b1(bits_), b2(mb_), b3(ratio_);
    bits_->setRange(8.0 * a->min_bytes() / p, 8.0 * a->max_bytes() / p);
    mb_->setRange(a->min_bytes() / 1e6, a->max_bytes() / 1e6);
    ratio_->setRange(4.0 * p / a->max_bytes(), 4.0 * p / a->min_bytes());
  }
  onAllocation();
}

void BudgetView::onCurve() {
  curve_->data()->clear();
  for (const TradeoffPoint& p : state_->curve()) curve_->addData(p.bytes / 1e6, std::max(p.error, 1e-12));
  if (!state_->curve().empty()) {
    curve_->rescaleAxes();
    const QCPRange x = plot_->xAxis->range();
    plot_->xAxis->setRange(x.lower - 0.03 * x.size(), x.upper + 0.03 * x.size());
    const QCPRange y = plot_->yAxis->range();
    plot_->yAxis->setRange(y.lower / 1.5, y.upper * 1.5);
  } else if (!state_->ready()) {
    plot_->xAxis->setRange(0, 5);  // a new document: no trace of the previous model's axes
    plot_->yAxis->setRange(1e-4, 1);
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

void BudgetView::onAllocation() {
  point_->data()->clear();
  budgetLine_->setVisible(false);
  if (!state_->ready()) {
    summary_->setText("Run the analysis to set a budget");
    plot_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const AllocationResult& a = state_->allocation();
  const int64_t p = state_->params();
  const double budget = static_cast<double>(a.budget_bytes);
  {
    const QSignalBlocker b0(slider_), b1(bits_), b2(mb_), b3(ratio_);
    slider_->setValue(bytesToSlider(a.budget_bytes));
    bits_->setValue(8.0 * budget / p);
    mb_->setValue(budget / 1e6);
    ratio_->setValue(4.0 * p / budget);
  }
  point_->addData(a.bytes / 1e6, std::max(a.predicted_error, 1e-12));
  budgetLine_->point1->setCoords(budget / 1e6, 1e-12);
  budgetLine_->point2->setCoords(budget / 1e6, 1.0);
  budgetLine_->setVisible(true);
  summary_->setText(QString("Budget %1 (%2 bits, %3× vs fp32) — allocation uses %4, predicted error %5")
                        .arg(formatBytes(budget))
                        .arg(8.0 * budget / p, 0, 'f', 2)
                        .arg(4.0 * p / budget, 0, 'f', 2)
                        .arg(formatBytes(static_cast<double>(a.bytes)))
                        .arg(a.predicted_error, 0, 'g', 4));
  summary_->setToolTip(summary_->text());
  if (curve_->dataCount() > 0)
    plot_->layer("marker")->replot();  // only the marker; the widget repaint that follows is coalesced by Qt
  else
    plot_->replot(QCustomPlot::rpQueuedReplot);
}

void BudgetView::onSlider(int value) { edit_->setBudget(sliderToBytes(value)); }

void BudgetView::onPlotClick(QMouseEvent* event) {
  if (!state_->ready() || event->button() != Qt::LeftButton) return;
  const double mb = plot_->xAxis->pixelToCoord(event->position().x());
  const auto& a = state_->allocator();
  edit_->setBudget(std::clamp(static_cast<int64_t>(std::llround(mb * 1e6)), a->min_bytes(), a->max_bytes()));
}
