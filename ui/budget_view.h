#pragma once
// The budget: the global trade-off curve (optimal predicted error vs memory, log y) with the current budget and
// allocation marked, and a slider plus average-bits / MB / ratio spin boxes. Every movement re-solves at once
// (sub-millisecond); consecutive moves merge into one undo step.
#include <QWidget>
#include <vector>

class EditActions;
class QCPGraph;
class QCPItemStraightLine;
class QCustomPlot;
class QDoubleSpinBox;
class QLabel;
class QMouseEvent;
class QSlider;
class WorkbenchDocument;

class BudgetView : public QWidget {
  Q_OBJECT
 public:
  BudgetView(WorkbenchDocument* state, EditActions* edit, QWidget* parent = nullptr);
  QCustomPlot* plot() const { return plot_; }
  QSlider* slider() const { return slider_; }
  QDoubleSpinBox* avgBitsBox() const { return bits_; }
  static constexpr int kSliderSteps = 2000;
  // Measured accuracy against budget (a sweep of the current analysis, constraints and evaluation set) on the right
  // axis: the compressed model's metric at each measured budget and the float model's as a dashed line.
  QCPGraph* sweepGraph() const { return sweep_; }
  QCPGraph* floatGraph() const { return float_; }
  // The budget under a point of the plot (its x pixel) in average bits, clamped into the reachable range; what the
  // plot's context menu offers to measure.
  double avgBitsAt(int pixelX) const;

 signals:
  // The plot's context menu: measure accuracy at these average bits (empty: every half bit).
  void sweepRequested(const std::vector<double>& avgBits);

 private:
  void onSession();
  void onCurve();
  void onAllocation();
  void onSlider(int value);
  void onPlotClick(QMouseEvent* event);
  void onSweeps();
  int64_t sliderToBytes(int value) const;
  int bytesToSlider(int64_t bytes) const;

  WorkbenchDocument* state_;
  EditActions* edit_;
  QCustomPlot* plot_;
  QCPGraph* curve_ = nullptr;
  QCPGraph* point_ = nullptr;
  QCPItemStraightLine* budgetLine_ = nullptr;
  QCPGraph* sweep_ = nullptr;
  QCPGraph* float_ = nullptr;
  QSlider* slider_;
  QDoubleSpinBox* bits_;
  QDoubleSpinBox* mb_;
  QDoubleSpinBox* ratio_;
  QLabel* summary_;
};
