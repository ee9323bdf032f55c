#pragma once
// The selected layer's options: size vs predicted error (log y), quantization coloured by bits and low rank by
// factor bits, the Pareto front as a line, the current choice ringed. Hovering shows an option; clicking pins
// the layer to it (undoable).
#include <QWidget>
#include <vector>

class EditActions;
class QCustomPlot;
class QCPGraph;
class QLabel;
class QToolButton;
class QMouseEvent;
class WorkbenchDocument;

class ParetoView : public QWidget {
  Q_OBJECT
 public:
  ParetoView(WorkbenchDocument* state, EditActions* edit, QWidget* parent = nullptr);
  QCustomPlot* plot() const { return plot_; }
  // The option under a widget position of the plot (within a few pixels), or -1.
  int optionAt(const QPointF& pos) const;
  // Plot coordinates of an option (for tests and the tooltip).
  QPointF optionPixel(int option) const;
  // Collapses or shows the legend (a plot shorter than kLegendMinPlotHeight starts with it collapsed).
  void setLegendShown(bool shown);
  static constexpr int kLegendMinPlotHeight = 300;

 protected:
  void resizeEvent(QResizeEvent* event) override;

 private:
  void rebuild();          // a new layer or analysis: all points
  void updateSelection();  // the allocation moved: only the highlight
  void onMouseMove(QMouseEvent* event);
  void onMousePress(QMouseEvent* event);
  double plotError(double error) const;

  WorkbenchDocument* state_;
  EditActions* edit_;
  QCustomPlot* plot_;
  QLabel* title_;
  QToolButton* legendButton_;
  bool legendChosen_ = false;  // the user's choice wins over the automatic one
  QCPGraph* front_ = nullptr;
  QCPGraph* current_ = nullptr;
  QCPGraph* pinned_ = nullptr;
  int layer_ = -1;
  double minPositiveError_ = 1e-12;
};
