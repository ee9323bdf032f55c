#pragma once
// A live loss curve (log y) for optimization jobs such as adaptive rounding: any Progress.detail holding
// "loss <number>" adds a point; it stays hidden until the first one.
#include <QWidget>

class QCustomPlot;

class LossPlot : public QWidget {
  Q_OBJECT
 public:
  explicit LossPlot(QWidget* parent = nullptr);
  void clear();
  // Parses "loss <number>" out of a progress detail; returns whether a point was added.
  bool addFromDetail(const QString& stage, qint64 step, const QString& detail);
  int points() const;

 private:
  QCustomPlot* plot_;
};
