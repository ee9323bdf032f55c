#include "allocation_view.h"

#include <qcustomplot.h>

#include <QHBoxLayout>
#include <QLabel>
#include <QMenu>
#include <QPushButton>
#include <QVBoxLayout>

#include "commands.h"
#include "constraint_menu.h"
#include "format.h"
#include "plot_export.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {
// "blocks.3.attn.qkv" -> "3 qkv": the block and the layer's own name fit under a bar.
QString shortName(const std::string& name) {
  const QString n = QString::fromStdString(name);
  const QStringList parts = n.split('.');
  if (parts.size() >= 3 && parts[0] == "blocks") return parts[1] + " " + parts.last();
  return parts.first();
}

QCPBars* makeBars(QCustomPlot* plot, const QString& name, const QColor& color) {
  auto* bars = new QCPBars(plot->xAxis, plot->yAxis);
  bars->setName(name);
  bars->setPen(QPen(color.darker(130)));
  bars->setBrush(color);
  bars->setWidth(0.75);
  return bars;
}
}  // namespace

AllocationView::AllocationView(WorkbenchDocument* state, EditActions* edit, QWidget* parent)
    : QWidget(parent), state_(state), edit_(edit) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  plot_ = new QCustomPlot(this);
  plot_->setObjectName("allocationPlot");
  plot_->setPlottingHints(QCP::phFastPolylines | QCP::phCacheLabels);
  plot_->setMinimumSize(300, 150);
  plot_->yAxis->setLabel("bits/weight");  // short labels: the chart is short at laptop size
  plot_->yAxis2->setLabel("rank/full");
  plot_->yAxis2->setVisible(true);
  plot_->yAxis2->setRange(0, 1.12);
  plot_->xAxis->setTickLabelRotation(60);
  plot_->xAxis->setSubTicks(false);
  plot_->xAxis->grid()->setVisible(false);
  quant_ = makeBars(plot_, "quantized", quantColor(4));
  lowRank_ = makeBars(plot_, "low rank", lowRankColor(6, 6));
  keptFloat_ = makeBars(plot_, "float (32 bits, capped)", QColor(170, 170, 170));
  keptFloat_->setBrush(QBrush(QColor(150, 150, 150), Qt::BDiagPattern));
  rank_ = new QCPGraph(plot_->xAxis, plot_->yAxis2);
  rank_->setName("rank fraction");
  rank_->setLineStyle(QCPGraph::lsNone);
  rank_->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssDiamond, QPen(Qt::black), QColor(250, 220, 80), 9));
  constrained_ = new QCPGraph(plot_->xAxis, plot_->yAxis2);
  constrained_->setName("constrained");
  constrained_->setLineStyle(QCPGraph::lsNone);
  constrained_->setScatterStyle(
      QCPScatterStyle(QCPScatterStyle::ssTriangleInverted, QColor(200, 0, 0), QColor(200, 0, 0), 8));
  selection_ = new QCPItemRect(plot_);
  selection_->setPen(Qt::NoPen);
  selection_->setBrush(QColor(255, 200, 0, 60));
  selection_->setLayer("background");
  selection_->setVisible(false);
  plot_->legend->setVisible(true);
  plot_->legend->setFont(QFont(font().family(), font().pointSize() - 1));
  // The legend sits in one row above the bars, never over them.
  plot_->axisRect()->insetLayout()->take(plot_->legend);
  plot_->plotLayout()->insertRow(0);
  plot_->plotLayout()->addElement(0, 0, plot_->legend);
  plot_->plotLayout()->setRowStretchFactor(0, 0.001);
  plot_->legend->setFillOrder(QCPLayoutGrid::foColumnsFirst);
  plot_->legend->setWrap(1);
  plot_->legend->setBorderPen(Qt::NoPen);
  methodBar_ = new QWidget(this);
  auto* methodLayout = new QHBoxLayout(methodBar_);
  methodLayout->setContentsMargins(0, 0, 0, 0);
  methodBanner_ = new QLabel(methodBar_);
  methodBanner_->setObjectName("methodBanner");
  backToLive_ = new QPushButton("Show the current allocation", methodBar_);
  methodLayout->addWidget(methodBanner_, 1);
  methodLayout->addWidget(backToLive_);
  methodBar_->setVisible(false);
  layout->addWidget(methodBar_);
  layout->addWidget(plot_);
  connect(backToLive_, &QPushButton::clicked, this, [this] { state_->setShownMethod(-1); });

  connect(state_, &WorkbenchDocument::shownMethodChanged, this, &AllocationView::updateBars);
  connect(state_, &WorkbenchDocument::modelChanged, this, &AllocationView::rebuildAxis);
  connect(state_, &WorkbenchDocument::sessionChanged, this, &AllocationView::rebuildAxis);
  connect(state_, &WorkbenchDocument::allocationChanged, this, &AllocationView::updateBars);
  connect(state_, &WorkbenchDocument::constraintsChanged, this, &AllocationView::updateBars);
  connect(state_, &WorkbenchDocument::selectedLayerChanged, this, &AllocationView::updateSelection);
  connect(plot_, &QCustomPlot::mousePress, this, &AllocationView::onMousePress);
}

void AllocationView::rebuildAxis() {
  const auto& layers = state_->model().layers;
  auto ticker = QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText);
  for (int i = 0; i < static_cast<int>(layers.size()); ++i) ticker->addTick(i, shortName(layers[i].name));
  plot_->xAxis->setTicker(ticker);
  plot_->xAxis->setRange(-0.7, std::max<double>(1, layers.size() - 0.3));
  updateBars();
}

void AllocationView::updateBars() {
  quant_->data()->clear();
  lowRank_->data()->clear();
  keptFloat_->data()->clear();
  rank_->data()->clear();
  constrained_->data()->clear();
  for (QCPItemText* t : floatLabels_) plot_->removeItem(t);
  floatLabels_.clear();
  double top = 8.5;
  std::vector<int> keptFloat;
  const MethodRow* method = state_->shownMethodRow();
  methodBar_->setVisible(method != nullptr);
  if (method) {
    methodBanner_->setText(QString("Showing <b>%1</b> from the method comparison (%2 bits; read-only)")
                               .arg(QString::fromStdString(method->method).toHtmlEscaped())
                               .arg(method->avg_bits, 0, 'f', 2));
    keptFloat = drawMethod(&top);
  } else if (state_->ready()) {
    const auto& layers = state_->layers();
    for (int i = 0; i < static_cast<int>(layers.size()); ++i) {
      const LayerAnalysis& l = layers[i];
      if (const OptionRow* o = state_->chosenOption(i)) {
        if (o->kind == OptionKind::Quant) {
          quant_->addData(i, o->bits);
        } else {
          const double bits = 8.0 * o->bytes / l.params;
          lowRank_->addData(i, bits);
          top = std::max(top, bits + 0.5);
          rank_->addData(i, l.full_rank > 0 ? static_cast<double>(o->rank) / l.full_rank : 0);
        }
      } else {
        keptFloat.push_back(i);
      }
      if (!state_->constraint(i).empty()) constrained_->addData(i, 1.07);
    }
  }
  // A layer kept in float (32 bits) would flatten every other bar: its bar is capped at the top of the axis,
  // hatched, and labelled with its real width.
  for (int i : keptFloat) {
    keptFloat_->addData(i, top);
    auto* label = new QCPItemText(plot_);
    label->position->setCoords(i, top);
    label->setPositionAlignment(Qt::AlignHCenter | Qt::AlignTop);
    label->setText("32");
    label->setFont(QFont(font().family(), font().pointSize() - 1, QFont::Bold));
    label->setClipToAxisRect(true);
    floatLabels_.push_back(label);
  }
  plot_->yAxis->setRange(0, top);
  updateSelection();
}

std::vector<int> AllocationView::drawMethod(double* top) {
  std::vector<int> keptFloat;
  const auto& layers = state_->model().layers;
  for (const MethodLayerChoice& c : state_->shownMethodRow()->layers) {
    const int i = state_->layerIndex(c.layer);
    if (i < 0) continue;  // a layer the analysis does not count (LRA-QViT compresses every linear layer)
    const LayerRow& l = layers[i];
    if (c.kept_float) {
      keptFloat.push_back(i);
    } else if (c.option.kind == OptionKind::Quant) {
      quant_->addData(i, c.option.bits);
    } else {
      const double bits = 8.0 * c.option.bytes / l.params;
      lowRank_->addData(i, bits);
      *top = std::max(*top, bits + 0.5);
      const int64_t full = std::min(l.out_features, l.in_features);
      rank_->addData(i, full > 0 ? static_cast<double>(c.option.rank) / full : 0);
    }
  }
  return keptFloat;
}

QList<QCPLayerable*> AllocationView::highlights() const { return {selection_}; }

double AllocationView::bitsAxisTop() const { return plot_->yAxis->range().upper; }

void AllocationView::updateSelection() {
  const int layer = state_->selectedLayer();
  selection_->setVisible(layer >= 0);
  selection_->topLeft->setCoords(layer - 0.5, plot_->yAxis->range().upper);
  selection_->bottomRight->setCoords(layer + 0.5, 0);
  plot_->replot(QCustomPlot::rpQueuedReplot);  // coalesced while the budget slider moves
}

int AllocationView::layerAt(double pixelX) const {
  const int layer = static_cast<int>(std::lround(plot_->xAxis->pixelToCoord(pixelX)));
  return layer >= 0 && layer < static_cast<int>(state_->model().layers.size()) ? layer : -1;
}

void AllocationView::onMousePress(QMouseEvent* event) {
  const int layer = layerAt(event->position().x());
  if (layer < 0) return;
  state_->setSelectedLayer(layer);
  if (event->button() == Qt::RightButton && !state_->shownMethodRow()) {  // a method's result is read-only
    QMenu menu(this);
    addConstraintActions(&menu, edit_, layer);
    menu.addSeparator();
    addSavePlotActions(&menu, plot_, "allocation", [this] { return highlights(); });
    menu.exec(event->globalPosition().toPoint());
  }
}
