#include "loss_plot.h"

#include <qcustomplot.h>

#include <QRegularExpression>
#include <QVBoxLayout>

#include "plot_export.h"

LossPlot::LossPlot(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  plot_ = new QCustomPlot(this);
  enablePlotSaveMenu(plot_, "rounding-loss");
  plot_->addGraph();
  plot_->graph(0)->setPen(QPen(QColor(200, 80, 40), 1.5));
  plot_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  plot_->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
  plot_->xAxis->setLabel("step");
  plot_->yAxis->setLabel("loss");
  plot_->setMinimumHeight(120);
  layout->addWidget(plot_);
  hide();
}

void LossPlot::clear() {
  plot_->graph(0)->data()->clear();
  plot_->replot(QCustomPlot::rpQueuedReplot);
  hide();
}

int LossPlot::points() const { return plot_->graph(0)->dataCount(); }

bool LossPlot::addFromDetail(const QString& stage, qint64 step, const QString& detail) {
  static const QRegularExpression re(R"(loss[ =:]+([-+0-9.eE]+))");
  const QRegularExpressionMatch m = re.match(detail);
  if (!m.hasMatch()) return false;
  bool ok = false;
  const double loss = m.captured(1).toDouble(&ok);
  if (!ok || !(loss > 0)) return false;
  plot_->graph(0)->setName(stage);
  plot_->graph(0)->addData(static_cast<double>(step), loss);
  plot_->rescaleAxes();
  plot_->replot(QCustomPlot::rpQueuedReplot);  // coalesced: many points per frame cost one repaint
  show();
  return true;
}
