#pragma once
// A live loss curve (log y) for optimization jobs such as adaptive rounding: any Progress.detail holding
// "loss <number>" adds a point; it stays hidden until the first one. Details naming a part ("layer 3/26 NAME loss
// X") split the curve into segments: dashed lines mark where each part starts, and a chooser shows one part alone.
#include <QString>
#include <QWidget>
#include <vector>

class QComboBox;
class QCustomPlot;

class LossPlot : public QWidget {
  Q_OBJECT
 public:
  explicit LossPlot(QWidget* parent = nullptr);
  void clear();
  // Parses "loss <number>" out of a progress detail; returns whether a point was added.
  bool addFromDetail(const QString& stage, qint64 step, const QString& detail);
  int points() const;
  double lastLoss() const { return lastLoss_; }

  struct Segment {
    QString name;  // "layer 3/26 blocks.0.mlp.fc1", or a block learned together: "layers 2-5/26 blocks.0"
    qint64 firstStep = 0, lastStep = 0;
  };
  const std::vector<Segment>& segments() const { return segments_; }
  // -1: every segment; otherwise that one alone (x and y fitted to its points).
  void showSegment(int index);
  QCustomPlot* plot() const { return plot_; }

 private:
  QCustomPlot* plot_;
  QComboBox* chooser_;
  std::vector<Segment> segments_;
  int shown_ = -1;
  double lastLoss_ = 0;
};
