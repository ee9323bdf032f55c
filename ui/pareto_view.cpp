#include "pareto_view.h"

#include <qcustomplot.h>

#include <QHBoxLayout>
#include <QLabel>
#include <QToolButton>
#include <QToolTip>
#include <QVBoxLayout>
#include <algorithm>
#include <map>

#include "commands.h"
#include "format.h"
#include "plot_export.h"
#include "workbench_document.h"

using namespace lorq::api;

ParetoView::ParetoView(WorkbenchDocument* state, EditActions* edit, QWidget* parent)
    : QWidget(parent), state_(state), edit_(edit) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  title_ = new QLabel("Select a layer", this);
  title_->setWordWrap(true);
  plot_ = new QCustomPlot(this);
  enablePlotSaveMenu(plot_, "layer-options");
  plot_->setMinimumSize(260, 130);  // small enough for a 1280x760 window
  plot_->setMouseTracking(true);
  plot_->xAxis->setLabel("size (KB)");
  plot_->yAxis->setLabel("pred. error");  // short enough for a short dock (the axis is log)
  plot_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  auto ticker = QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog);
  ticker->setTickCount(4);  // decades are enough; more crowd a small dock
  plot_->yAxis->setTicker(ticker);
  plot_->yAxis->setNumberFormat("eb");
  plot_->yAxis->setNumberPrecision(0);
  plot_->legend->setVisible(true);
  plot_->legend->setFont(QFont(font().family(), font().pointSize() - 1));
  // The legend goes under the plot in three rows, so it never hides points.
  plot_->axisRect()->insetLayout()->take(plot_->legend);
  plot_->plotLayout()->addElement(1, 0, plot_->legend);
  plot_->plotLayout()->setRowStretchFactor(1, 0.001);
  plot_->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  plot_->legend->setWrap(3);  // rows
  plot_->legend->setBorderPen(Qt::NoPen);
  plot_->legend->setMargins(QMargins(2, 0, 2, 0));
  plot_->setObjectName("paretoPlot");
  plot_->setPlottingHints(QCP::phFastPolylines | QCP::phCacheLabels);
  // The current choice and the pin live on a buffered layer: a budget step redraws only them.
  plot_->addLayer("marker", plot_->layer("main"), QCustomPlot::limAbove);
  plot_->layer("marker")->setMode(QCPLayer::lmBuffered);
  // The legend is collapsible: in a short dock it would squeeze the points (it starts collapsed there).
  legendButton_ = new QToolButton(this);
  legendButton_->setText("Legend");
  legendButton_->setCheckable(true);
  legendButton_->setChecked(true);
  legendButton_->setObjectName("paretoLegendButton");
  legendButton_->setToolTip("Show or hide the legend under the plot");
  connect(legendButton_, &QToolButton::clicked, this, [this](bool on) {
    legendChosen_ = true;
    setLegendShown(on);
  });
  auto* titleRow = new QHBoxLayout();
  titleRow->addWidget(title_, 1);
  titleRow->addWidget(legendButton_);
  layout->addLayout(titleRow);
  layout->addWidget(plot_, 1);
  // The how-to is a tooltip, not a line of its own: the dock is short at laptop size.
  plot_->setToolTip("Hover a point for the option; click it to pin the layer (Ctrl+Z undoes).");

  connect(state_, &WorkbenchDocument::selectedLayerChanged, this, &ParetoView::rebuild);
  connect(state_, &WorkbenchDocument::sessionChanged, this, &ParetoView::rebuild);
  connect(state_, &WorkbenchDocument::analysisRefined, this, &ParetoView::rebuild);  // the points move
  connect(state_, &WorkbenchDocument::allocationChanged, this, &ParetoView::updateSelection);
  connect(state_, &WorkbenchDocument::constraintsChanged, this, &ParetoView::updateSelection);
  connect(plot_, &QCustomPlot::mouseMove, this, &ParetoView::onMouseMove);
  connect(plot_, &QCustomPlot::mousePress, this, &ParetoView::onMousePress);
}

double ParetoView::plotError(double error) const { return std::max(error, minPositiveError_); }

void ParetoView::setLegendShown(bool shown) {
  legendButton_->setChecked(shown);
  if (plot_->legend->visible() == shown) return;
  plot_->legend->setVisible(shown);
  // A hidden legend gives its row back to the points.
  plot_->plotLayout()->setRowSpacing(shown ? 5 : 0);
  if (!shown)
    plot_->plotLayout()->take(plot_->legend);
  else if (!plot_->plotLayout()->hasElement(1, 0)) {
    plot_->plotLayout()->addElement(1, 0, plot_->legend);
    plot_->plotLayout()->setRowStretchFactor(1, 0.001);
  }
  plot_->plotLayout()->simplify();
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

void ParetoView::resizeEvent(QResizeEvent* event) {
  QWidget::resizeEvent(event);
  if (!legendChosen_) setLegendShown(plot_->height() >= kLegendMinPlotHeight);
}

void ParetoView::rebuild() {
  plot_->clearGraphs();
  front_ = current_ = pinned_ = nullptr;
  layer_ = state_->selectedLayer();
  const auto& layers = state_->layers();
  if (!state_->ready() || layer_ < 0 || layer_ >= static_cast<int>(layers.size())) {
    title_->setText(state_->ready() ? "Select a layer" : "Run the analysis to see each layer's options");
    plot_->replot(QCustomPlot::rpQueuedReplot);
    return;
  }
  const LayerAnalysis& l = layers[layer_];
  title_->setText(QString("<b>%1</b> — %2 × %3, %4 options")
                      .arg(QString::fromStdString(l.name))
                      .arg(l.out_features)
                      .arg(l.in_features)
                      .arg(l.options.size()));
  // Log axis: a zero error is drawn a decade below the smallest positive one.
  double minPos = 1e300;
  for (const OptionRow& o : l.options)
    if (o.error > 0) minPos = std::min(minPos, o.error);
  minPositiveError_ = minPos < 1e300 ? minPos / 10 : 1e-12;

  // One graph per colour group: Q (one per bit width) and LR (one per factor-bit pair).
  std::map<std::pair<int, int>, QCPGraph*> groups;  // (kind*100 + bits or A), B
  for (const OptionRow& o : l.options) {
    const bool q = o.kind == OptionKind::Quant;
    const std::pair<int, int> key = q ? std::make_pair(o.bits, 0) : std::make_pair(100 + o.bits_a, o.bits_b);
    QCPGraph*& g = groups[key];
    if (!g) {
      g = plot_->addGraph();
      g->setLineStyle(QCPGraph::lsNone);
      const QColor c = kindColor(o);
      // Low rank: hue by A bits and shape by B bits, so a pair never depends on telling shades apart.
      const QCPScatterStyle::ScatterShape lrShape = o.bits_b <= 4   ? QCPScatterStyle::ssDisc
                                                    : o.bits_b <= 6 ? QCPScatterStyle::ssTriangle
                                                                    : QCPScatterStyle::ssDiamond;
      g->setScatterStyle(q ? QCPScatterStyle(QCPScatterStyle::ssSquare, c, c, 8)
                           : QCPScatterStyle(lrShape, c, c, lrShape == QCPScatterStyle::ssDisc ? 5 : 7));
      g->setName(q ? QString("Q%1").arg(o.bits) : QString("LR A%1/B%2").arg(o.bits_a).arg(o.bits_b));
    }
    g->addData(o.bytes / 1e3, plotError(o.error));
  }
  // The front as a line, in size order.
  std::vector<const OptionRow*> front;
  for (const OptionRow& o : l.options)
    if (o.on_front) front.push_back(&o);
  std::sort(front.begin(), front.end(), [](const OptionRow* a, const OptionRow* b) { return a->bytes < b->bytes; });
  front_ = plot_->addGraph();
  front_->setName("Pareto front");
  front_->setPen(QPen(QColor(60, 60, 60), 1.2, Qt::DashLine));
  front_->setLineStyle(QCPGraph::lsStepLeft);
  for (const OptionRow* o : front) front_->addData(o->bytes / 1e3, plotError(o->error));
  pinned_ = plot_->addGraph();
  pinned_->setLayer("marker");
  pinned_->setName("pinned");
  pinned_->setLineStyle(QCPGraph::lsNone);
  pinned_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssStar, QColor(200, 0, 0), 14));
  current_ = plot_->addGraph();
  current_->setLayer("marker");
  current_->setName("current choice");
  current_->setLineStyle(QCPGraph::lsNone);
  current_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QPen(Qt::black, 2.5), Qt::NoBrush, 16));
  plot_->rescaleAxes();
  plot_->xAxis->scaleRange(1.08, plot_->xAxis->range().center());
  plot_->yAxis->setRange(plot_->yAxis->range().lower / 2, plot_->yAxis->range().upper * 2);
  updateSelection();
  plot_->replot(QCustomPlot::rpQueuedReplot);
}

void ParetoView::updateSelection() {
  if (!current_ || layer_ < 0 || layer_ >= static_cast<int>(state_->layers().size())) return;
  const LayerAnalysis& l = state_->layers()[layer_];
  current_->data()->clear();
  pinned_->data()->clear();
  if (const OptionRow* o = state_->chosenOption(layer_)) current_->addData(o->bytes / 1e3, plotError(o->error));
  const LayerConstraint c = state_->constraint(layer_);
  if (c.pinned_option >= 0 && c.pinned_option < static_cast<int>(l.options.size())) {
    const OptionRow& p = l.options[c.pinned_option];
    pinned_->addData(p.bytes / 1e3, plotError(p.error));
  }
  plot_->layer("marker")->replot();  // only the highlight; the widget repaint that follows is coalesced by Qt
}

QPointF ParetoView::optionPixel(int option) const {
  const OptionRow& o = state_->layers()[layer_].options[option];
  return {plot_->xAxis->coordToPixel(o.bytes / 1e3), plot_->yAxis->coordToPixel(plotError(o.error))};
}

int ParetoView::optionAt(const QPointF& pos) const {
  if (!state_->ready() || layer_ < 0 || layer_ >= static_cast<int>(state_->layers().size())) return -1;
  const auto& options = state_->layers()[layer_].options;
  int best = -1;
  double bestDist = 9.0;  // logical pixels
  for (int i = 0; i < static_cast<int>(options.size()); ++i) {
    const QPointF p = optionPixel(i);
    const double d = std::hypot(p.x() - pos.x(), p.y() - pos.y());
    if (d < bestDist) {
      bestDist = d;
      best = i;
    }
  }
  return best;
}

void ParetoView::onMouseMove(QMouseEvent* event) {
  const int option = optionAt(event->position());
  if (option < 0) {
    QToolTip::hideText();
    plot_->setCursor(Qt::ArrowCursor);
    return;
  }
  const LayerAnalysis& l = state_->layers()[layer_];
  plot_->setCursor(Qt::PointingHandCursor);
  QToolTip::showText(event->globalPosition().toPoint(),
                     optionTooltip(l.options[option], l.params) + "<br><i>click to pin</i>", plot_);
}

void ParetoView::onMousePress(QMouseEvent* event) {
  if (event->button() != Qt::LeftButton) return;
  const int option = optionAt(event->position());
  if (option >= 0) edit_->pinLayer(layer_, option);
}
