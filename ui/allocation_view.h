#pragma once
// The allocation in network order: one bar per layer with its bits per weight (quantization: b; low rank: the
// factors' storage as bits per original weight; float: 32), the rank as a fraction of full rank for low-rank
// layers, and a marker on constrained layers. Click a bar to select the layer, right-click to constrain it. When the
// document shows a method of the comparison (WorkbenchDocument::shownMethodRow), its per-layer result is drawn
// instead, read-only, under a banner naming the method with a button back to the live allocation.
#include <QWidget>
#include <vector>

class EditActions;
class QCPBars;
class QCPGraph;
class QCPItemRect;
class QCPItemText;
class QCPLayerable;
class QCustomPlot;
class QLabel;
class QMouseEvent;
class QPushButton;
class WorkbenchDocument;

class AllocationView : public QWidget {
  Q_OBJECT
 public:
  AllocationView(WorkbenchDocument* state, EditActions* edit, QWidget* parent = nullptr);
  QCustomPlot* plot() const { return plot_; }
  int layerAt(double pixelX) const;
  // What is drawn for the UI only (the selected layer's band): hidden in saved plots.
  QList<QCPLayerable*> highlights() const;
  // The top of the bits axis (a layer kept in float is capped there rather than drawn at 32).
  double bitsAxisTop() const;
  QLabel* methodBanner() const { return methodBanner_; }  // visible while a method is shown
  QPushButton* backToLiveButton() const { return backToLive_; }
  // The bars drawn: quantized, low rank, kept in float.
  QCPBars* quantBars() const { return quant_; }
  QCPBars* lowRankBars() const { return lowRank_; }

 private:
  void rebuildAxis();
  void updateBars();
  void updateSelection();
  // The shown method's layers (by name onto the model's layers): fills the bars, returns the float layers.
  std::vector<int> drawMethod(double* top);
  void onMousePress(QMouseEvent* event);

  WorkbenchDocument* state_;
  EditActions* edit_;
  QCustomPlot* plot_;
  QCPBars* quant_;
  QCPBars* lowRank_;
  QCPBars* keptFloat_;
  QCPGraph* rank_;
  QCPGraph* constrained_;
  QCPItemRect* selection_;
  std::vector<QCPItemText*> floatLabels_;
  QWidget* methodBar_;
  QLabel* methodBanner_;
  QPushButton* backToLive_;
};
