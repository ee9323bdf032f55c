#pragma once
// The project panel: model, calibration images (count, thumbnails, unreadable files), optional labeled
// evaluation set, analysis settings and the Analyze button.
#include <QWidget>

#include "lorq/session/api.h"

class QCheckBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QPushButton;
class QSpinBox;

class SessionPanel : public QWidget {
  Q_OBJECT
 public:
  explicit SessionPanel(QWidget* parent = nullptr);

  void setModelText(const QString& path, const QString& description);
  // Lists the folder (no decoding but a header check of the first files); returns the problem or "".
  QString setCalibration(const QString& images, const QString& labels);
  void setEval(const QString& images, const QString& labels);
  QString calibrationImages() const { return calibImages_; }
  QString calibrationLabels() const { return calibLabels_; }
  QString evalImages() const;
  QString evalLabels() const;

  lorq::api::AnalysisSettings settings() const;
  void setSettings(const lorq::api::AnalysisSettings& s);
  void setAnalysisText(const QString& text);
  void setBusy(bool busy);

 signals:
  void openModelRequested();
  void openDemoRequested();
  void chooseCalibrationRequested();
  void chooseEvalRequested();
  void analyzeRequested();
  void settingsChanged();

 private:
  QString calibImages_, calibLabels_;
  QLabel* model_;
  QLabel* calibInfo_;
  QListWidget* thumbnails_;
  QLineEdit* evalImages_;
  QLineEdit* evalLabels_;
  QSpinBox* calibCount_;
  QSpinBox* lfhImages_;
  QSpinBox* projections_;
  QSpinBox* anchors_;
  QCheckBox* estimate_;
  QPushButton* analyze_;
  QLabel* analysis_;
};
