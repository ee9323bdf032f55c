#pragma once
// The project panel, a view of the document: model, calibration images (count, thumbnails, unreadable files),
// optional labeled evaluation set and the analysis settings. Its Run analysis bar is a separate widget so the
// window can keep it visible below the scrolling fields. Spin boxes ignore the mouse wheel unless focused, so
// scrolling the panel never changes a setting.
#include <QWidget>

#include "lorq/session/api.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QListWidget;
class QPushButton;
class QSpinBox;
class WorkbenchDocument;

class SessionPanel : public QWidget {
  Q_OBJECT
 public:
  explicit SessionPanel(WorkbenchDocument* document, QWidget* parent = nullptr);

  // Shows a folder the document refused (the document keeps its previous images).
  void showCalibrationProblem(const QString& problem);
  void setBusy(bool busy);
  QWidget* analyzeBar() const { return analyzeBar_; }
  QPushButton* analyzeButton() const { return analyze_; }
  QSpinBox* calibrationCountBox() const { return calibCount_; }
  QLabel* calibrationInfo() const { return calibInfo_; }
  // "" or why the analysis will get fewer calibration images than asked (the folder is too small).
  QLabel* calibrationWarning() const { return calibWarning_; }
  // One line: the final model's settings and whether evaluation and export use it (final_settings_dialog.h).
  QLabel* finalModelLine() const { return final_; }

 signals:
  void openModelRequested();
  void openDemoRequested();
  void chooseCalibrationRequested();
  void chooseEvalRequested();
  void analyzeRequested();

 protected:
  bool eventFilter(QObject* watched, QEvent* event) override;

 private:
  void onModel();
  void onSources();
  void onSession();
  void showCalibration();
  void showFinalModel();
  void commitSettings();
  void commitEval();

  WorkbenchDocument* document_;
  QString shownImages_, shownLabels_;
  QLabel* model_;
  QLabel* calibInfo_;
  QLabel* calibWarning_;
  QListWidget* thumbnails_;
  QLineEdit* evalImages_;
  QLineEdit* evalLabels_;
  QSpinBox* calibCount_;
  QSpinBox* lfhImages_;
  QSpinBox* projections_;
  QSpinBox* anchors_;
  QCheckBox* estimate_;
  QCheckBox* calibrated_;
  QComboBox* quantizer_;
  QSpinBox* gptqImages_;  // AnalysisSettings::gptq_images, enabled with the gptq quantizer
  QWidget* analyzeBar_;
  QPushButton* analyze_;
  QLabel* analysis_;
  QLabel* final_;
};
