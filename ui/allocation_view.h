#pragma once
// The allocation in network order: one bar per layer with its bits per weight (quantization: b; low rank: the
// factors' storage as bits per original weight; float: 32), the rank as a fraction of full rank for low-rank
// layers, and a marker on constrained layers. Click a bar to select the layer, right-click to constrain it.
#include <QWidget>

class EditActions;
class QCPBars;
class QCPGraph;
class QCPItemRect;
class QCustomPlot;
class QMouseEvent;
class WorkbenchState;

class AllocationView : public QWidget {
  Q_OBJECT
 public:
  AllocationView(WorkbenchState* state, EditActions* edit, QWidget* parent = nullptr);
  QCustomPlot* plot() const { return plot_; }
  int layerAt(double pixelX) const;

 private:
  void rebuildAxis();
  void updateBars();
  void updateSelection();
  void onMousePress(QMouseEvent* event);

  WorkbenchState* state_;
  EditActions* edit_;
  QCustomPlot* plot_;
  QCPBars* quant_;
  QCPBars* lowRank_;
  QCPBars* keptFloat_;
  QCPGraph* rank_;
  QCPGraph* constrained_;
  QCPItemRect* selection_;
};
