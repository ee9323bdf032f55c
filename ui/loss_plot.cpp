#include "loss_plot.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QRegularExpression>
#include <QSignalBlocker>
#include <QVBoxLayout>

#include "job_runner.h"
#include "plot_export.h"

LossPlot::LossPlot(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(0, 0, 0, 0);
  chooser_ = new QComboBox(this);
  chooser_->setObjectName("lossSegment");
  chooser_->setToolTip("Show the whole run or one layer's optimization");
  layout->addWidget(chooser_);
  plot_ = new QCustomPlot(this);
  enablePlotSaveMenu(plot_, "rounding-loss");
  plot_->addGraph();
  plot_->graph(0)->setPen(QPen(QColor(200, 80, 40), 1.5));
  plot_->yAxis->setScaleType(QCPAxis::stLogarithmic);
  plot_->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
  plot_->xAxis->setLabel("step");
  plot_->yAxis->setLabel("loss");
  plot_->setMinimumHeight(120);
  plot_->addLayer("boundaries", plot_->layer("grid"), QCustomPlot::limAbove);
  layout->addWidget(plot_, 1);
  connect(chooser_, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int i) { showSegment(i - 1); });
  clear();
}

void LossPlot::clear() {
  plot_->graph(0)->data()->clear();
  plot_->clearItems();
  segments_.clear();
  shown_ = -1;
  lastLoss_ = 0;
  {
    const QSignalBlocker block(chooser_);
    chooser_->clear();
    chooser_->addItem("All layers");
  }
  chooser_->hide();
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
  const QString part = QString::fromStdString(progressPart(detail.toStdString()));
  if (!part.isEmpty() && (segments_.empty() || segments_.back().name != part)) {
    segments_.push_back({part, step, step});
    chooser_->addItem(part);
    chooser_->setVisible(segments_.size() > 1);
    if (segments_.size() > 1) {  // a dashed line where this part starts
      auto* line = new QCPItemStraightLine(plot_);
      line->setLayer("boundaries");
      line->setPen(QPen(QColor(120, 120, 120), 1, Qt::DashLine));
      line->point1->setCoords(step - 0.5, 1);
      line->point2->setCoords(step - 0.5, 2);
    }
  }
  if (!segments_.empty()) segments_.back().lastStep = step;
  lastLoss_ = loss;
  plot_->graph(0)->setName(stage);
  plot_->graph(0)->addData(static_cast<double>(step), loss);
  showSegment(shown_);
  show();
  return true;
}

void LossPlot::showSegment(int index) {
  shown_ = index >= 0 && index < static_cast<int>(segments_.size()) ? index : -1;
  if (shown_ < 0) {
    plot_->rescaleAxes();
  } else {
    const Segment& s = segments_[shown_];
    plot_->xAxis->setRange(s.firstStep - 0.5, s.lastStep + 0.5);
    bool found = false;
    const QCPRange y =
        plot_->graph(0)->getValueRange(found, QCP::sdBoth, QCPRange(s.firstStep - 0.5, s.lastStep + 0.5));
    if (found) plot_->yAxis->setRange(y.lower / 1.2, y.upper * 1.2);
  }
  if (chooser_->currentIndex() != shown_ + 1) {
    const QSignalBlocker block(chooser_);
    chooser_->setCurrentIndex(shown_ + 1);
  }
  plot_->replot(QCustomPlot::rpQueuedReplot);  // coalesced: many points per frame cost one repaint
}
