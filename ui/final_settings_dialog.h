#pragma once
// Analysis › Final model…: every FinalSettings field a user sets (lorq/session/api.h), grouped as the engine applies
// them after the allocation: activations (static §8 or LRA-QViT's per-token), LRA-QViT's building blocks (WADS,
// recovery by distillation), refit, adaptive rounding. Controls that do not apply are disabled (per-token and WADS
// need activation bits: finalize() refuses them otherwise). Also the one-line wording of settings and summaries that
// the session panel, the status bar and the Jobs log share.
#include <QDialog>
#include <QString>
#include <QStringList>

#include "lorq/session/api.h"

class QButtonGroup;
class QCheckBox;
class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QRadioButton;
class QSpinBox;
class WorkbenchDocument;

// "per-token A8, WADS 100 steps, recovery 20 steps" ("weights only, nearest rounding" for the defaults).
QString describeFinalSettings(const lorq::api::FinalSettings& settings);
// What a finished finalize did, one line each: its stages' seconds, WADS points and error, the recovery loss,
// rounded layers, warnings.
QStringList describeFinalSummary(const lorq::api::FinalSummary& summary);
// The document's final model in one line: its settings and whether evaluation and export use it ("final model:
// per-token A8, WADS 100 steps, nearest rounding — not built yet (Analysis › Final model…)").
QString describeFinalModel(const WorkbenchDocument& document);
bool sameFinalSettings(const lorq::api::FinalSettings& a, const lorq::api::FinalSettings& b);
// "" or why finalize() (or a session file) would refuse the settings: per-token or WADS without activation bits,
// bits other than 0/4/6/8, negative steps, no images, a learning rate <= 0.
QString finalSettingsProblem(const lorq::api::FinalSettings& settings);

class FinalSettingsDialog : public QDialog {
  Q_OBJECT
 public:
  // `target`: what gets built ("the current allocation: 1.2 MB, 4.00 bits").
  FinalSettingsDialog(const lorq::api::FinalSettings& settings, const QString& target, QWidget* parent = nullptr);

  void setSettings(const lorq::api::FinalSettings& settings);
  // The dialog's settings; per-token and WADS only with activation bits, so finalize() accepts them.
  lorq::api::FinalSettings settings() const;

  QComboBox* activationBitsBox() const { return actBits_; }
  QRadioButton* perTokenButton() const { return perToken_; }
  QRadioButton* staticButton() const { return static_; }
  QCheckBox* mixedPrecisionBox() const { return mixed_; }
  QCheckBox* ridgeBox() const { return ridge_; }
  QCheckBox* wadsBox() const { return wads_; }
  QSpinBox* wadsStepsBox() const { return wadsSteps_; }
  QSpinBox* recoveryStepsBox() const { return recoverySteps_; }
  QDoubleSpinBox* recoveryLrBox() const { return recoveryLr_; }
  QSpinBox* recoveryImagesBox() const { return recoveryImages_; }
  QCheckBox* refitBox() const { return refit_; }
  QCheckBox* roundBox() const { return round_; }
  QSpinBox* roundIterationsBox() const { return roundIters_; }
  QSpinBox* roundImagesBox() const { return roundImages_; }
  QSpinBox* roundViewsBox() const { return roundViews_; }
  QCheckBox* perLayerBox() const { return perLayer_; }
  QCheckBox* keepLearnedBox() const { return keepLearned_; }

 private:
  void updateEnabled();

  lorq::api::FinalSettings base_;  // the fields no control shows (the rounding checkpoint's file)
  QComboBox* actBits_;
  QRadioButton* static_;
  QRadioButton* perToken_;
  QButtonGroup* quantizers_;
  QCheckBox* mixed_;
  QCheckBox* ridge_;
  QCheckBox* wads_;
  QSpinBox* wadsSteps_;
  QSpinBox* recoverySteps_;
  QDoubleSpinBox* recoveryLr_;
  QSpinBox* recoveryImages_;
  QCheckBox* refit_;
  QCheckBox* round_;
  QSpinBox* roundIters_;
  QSpinBox* roundImages_;
  QSpinBox* roundViews_;
  QCheckBox* perLayer_;
  QCheckBox* keepLearned_;
  QLabel* summary_;
};
