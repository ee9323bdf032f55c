#include "final_settings_dialog.h"

#include <QButtonGroup>
#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPushButton>
#include <QRadioButton>
#include <QSpinBox>
#include <QVBoxLayout>

#include "workbench_document.h"

using namespace lorq::api;

QString describeFinalSettings(const FinalSettings& s) {
  QStringList parts;
  if (s.activation_bits <= 0) {
    parts << "weights only";
  } else if (s.per_token_activations) {
    parts << QString("per-token A%1").arg(s.activation_bits);
  } else {
    parts << QString("static A%1").arg(s.activation_bits) + (s.activation_mp ? " mixed" : "") +
                 (s.ridge ? "" : " without ridge");
  }
  if (s.wads && s.activation_bits > 0) parts << QString("WADS %1 steps").arg(s.wads_steps);
  if (s.recovery_steps > 0)
    parts << QString("recovery %1 steps (lr %2, %3 images)")
                 .arg(s.recovery_steps)
                 .arg(s.recovery_lr, 0, 'g', 3)
                 .arg(s.recovery_images);
  // Static activations always refit (§9); say it only where it is a choice.
  if (s.refit && (s.activation_bits <= 0 || s.per_token_activations)) parts << "refit";
  parts << (s.round ? QString("adaptive rounding %1 steps/%2")
                          .arg(s.round_iterations)
                          .arg(s.round_per_layer ? "layer" : "block")
                    : "nearest rounding");
  return parts.join(", ");
}

QStringList describeFinalSummary(const FinalSummary& s) {
  QStringList lines;
  QStringList stages;
  double total = 0;
  for (const auto& [name, seconds] : s.stage_seconds) {
    stages << QString("%1 %2 s").arg(QString::fromStdString(name)).arg(seconds, 0, 'f', 1);
    total += seconds;
  }
  lines << QString("Final model built in %1 s: %2").arg(total, 0, 'f', 1).arg(stages.join(", "));
  if (s.wads_points > 0)
    lines << QString("WADS: %1 points, summed weight-aware error %2 → %3")
                 .arg(s.wads_points)
                 .arg(s.wads_error_before, 0, 'g', 4)
                 .arg(s.wads_error_after, 0, 'g', 4);
  if (s.recovery_loss_before > 0 || s.recovery_loss_after > 0)
    lines << QString("recovery: distillation loss %1 → %2")
                 .arg(s.recovery_loss_before, 0, 'g', 4)
                 .arg(s.recovery_loss_after, 0, 'g', 4);
  if (s.rounding_cancelled)
    lines << QString("adaptive rounding cancelled: %1 of %2 layers learned; the rest keep nearest rounding")
                 .arg(s.learned_layers)
                 .arg(s.compressed_layers);
  else if (s.rounded_layers > 0)
    lines << QString("adaptive rounding: %1 layers, summed reconstruction error %2 → %3")
                 .arg(s.rounded_layers)
                 .arg(s.nearest_error, 0, 'g', 4)
                 .arg(s.learned_error, 0, 'g', 4);
  for (const std::string& w : s.warnings) lines << "warning: " + QString::fromStdString(w);
  return lines;
}

bool sameFinalSettings(const FinalSettings& a, const FinalSettings& b) {
  return a.refit == b.refit && a.activation_bits == b.activation_bits && a.activation_mp == b.activation_mp &&
         a.ridge == b.ridge && a.round == b.round && a.round_iterations == b.round_iterations &&
         a.round_images == b.round_images && a.round_views == b.round_views && a.round_per_layer == b.round_per_layer &&
         a.round_checkpoint == b.round_checkpoint && a.keep_learned_on_cancel == b.keep_learned_on_cancel &&
         a.per_token_activations == b.per_token_activations && a.wads == b.wads && a.wads_steps == b.wads_steps &&
         a.recovery_steps == b.recovery_steps && a.recovery_lr == b.recovery_lr &&
         a.recovery_images == b.recovery_images;
}

QString finalSettingsProblem(const FinalSettings& s) {
  if (s.activation_bits != 0 && s.activation_bits != 4 && s.activation_bits != 6 && s.activation_bits != 8)
    return QString("activation bits must be 0 (weights only), 4, 6 or 8, not %1").arg(s.activation_bits);
  if (s.activation_bits == 0 && (s.per_token_activations || s.wads))
    return "per-token activations and WADS need activation bits (4, 6 or 8)";
  if (s.wads_steps < 0 || s.recovery_steps < 0) return "WADS and recovery steps must be >= 0";
  if (!(s.recovery_lr > 0)) return "the recovery learning rate must be > 0";
  if (s.recovery_images < 1 || s.round_images < 1 || s.round_iterations < 1)
    return "recovery images, rounding images and rounding steps must be >= 1";
  if (s.round_views < 0 || s.round_views > 64) return "augmented views per rounding image must be 0 to 64";
  return {};
}

QString describeFinalModel(const WorkbenchDocument& document) {
  const auto& applied = document.finalSettings();
  const FinalSettings* built = document.builtFinalSettings();
  switch (document.finalState()) {
    case WorkbenchDocument::FinalState::NotBuilt:
      if (!applied) return "final model: none (nearest rounding, weights only) — Analysis › Final model…";
      return "final model: " + describeFinalSettings(*applied) + " — not built yet (Analysis › Final model…)";
    case WorkbenchDocument::FinalState::Current: {
      QString line = "final model: " + describeFinalSettings(*built) + " — built; evaluation and export use it";
      if (applied && !sameFinalSettings(*applied, *built))
        line += " (the last settings applied, " + describeFinalSettings(*applied) + ", were not built)";
      return line;
    }
    case WorkbenchDocument::FinalState::Stale:
      break;
  }
  return "final model: " + describeFinalSettings(*built) +
         " — built for another allocation (the budget, a constraint or the refined analysis changed it): evaluation "
         "and export use nearest rounding, weights only; Analysis › Final model… rebuilds it";
}

namespace {

QSpinBox* spinBox(int lo, int hi, int step, const QString& suffix, QWidget* parent) {
  auto* b = new QSpinBox(parent);
  b->setRange(lo, hi);
  b->setSingleStep(step);
  b->setSuffix(suffix);
  return b;
}

// A label and its control share the tooltip, so hovering either explains it.
void addRow(QFormLayout* form, const QString& label, QWidget* field, const QString& tip) {
  field->setToolTip(tip);
  form->addRow(label, field);
  if (QWidget* l = form->labelForField(field)) l->setToolTip(tip);
}

}  // namespace

FinalSettingsDialog::FinalSettingsDialog(const FinalSettings& settings, const QString& target, QWidget* parent)
    : QDialog(parent), base_(settings) {
  setWindowTitle("Final model");
  auto* layout = new QVBoxLayout(this);
  auto* intro = new QLabel(QString("Builds the final model of %1 in the background; evaluation (F6, Compare) and "
                                   "export then use it while the allocation stays. Each setting's tooltip gives its "
                                   "cost on DeiT-Tiny, measured on this 2-core CPU.")
                               .arg(target),
                           this);
  intro->setWordWrap(true);
  layout->addWidget(intro);

  // ---- Activations
  auto* acts = new QGroupBox("Activations", this);
  auto* actForm = new QFormLayout(acts);
  actBits_ = new QComboBox(acts);
  actBits_->addItem("weights only", 0);
  actBits_->addItem("8 bits", 8);
  actBits_->addItem("6 bits", 6);
  actBits_->addItem("4 bits", 4);
  addRow(actForm, "Quantize activations:", actBits_,
         "Weights only keeps the activations in float. 8, 6 or 4 bits quantize every linear layer's input too "
         "(spec §8 static, or LRA-QViT's per-token below). DeiT-Tiny W4A8 static: 76.5 % top-1 vs 77.1 % weights "
         "only.");
  auto* kinds = new QWidget(acts);
  auto* kindsLayout = new QHBoxLayout(kinds);
  kindsLayout->setContentsMargins(0, 0, 0, 0);
  static_ = new QRadioButton("static (calibrated)", kinds);
  static_->setToolTip(
      "Spec §8: per-tensor scales calibrated once on the calibration images, LayerNorms folded, the layers refitted "
      "to the rebuilt model (§9). DeiT-Tiny: about 75 s (activation quantization 39 s, rebuilt LFH 29 s, refit "
      "7 s).");
  perToken_ = new QRadioButton("per token (dynamic)", kinds);
  perToken_->setToolTip(
      "LRA-QViT: one scale per token row computed at run time (and per token at every low-rank bottleneck); no "
      "calibration stage. DeiT-Tiny W4A8: 77.6 % top-1 (+1.1 over static) and about 2 minutes faster. The export "
      "cannot go to ONNX or timm. Needs activation bits.");
  quantizers_ = new QButtonGroup(this);
  quantizers_->addButton(static_);
  quantizers_->addButton(perToken_);
  kindsLayout->addWidget(static_);
  kindsLayout->addWidget(perToken_);
  kindsLayout->addStretch(1);
  actForm->addRow("Quantizers:", kinds);
  mixed_ = new QCheckBox("mixed precision", acts);
  mixed_->setToolTip(
      "Spec §8.4: the layers whose inputs suffer most keep more activation bits. Static activations only.");
  actForm->addRow("", mixed_);
  ridge_ = new QCheckBox("ridge-regression correction", acts);
  ridge_->setToolTip(
      "Spec §8.6: corrects each layer's weights for its quantized inputs (a ridge regression on the calibration "
      "images; seconds). Static activations only.");
  actForm->addRow("", ridge_);
  layout->addWidget(acts);

  // ---- LRA-QViT's building blocks
  auto* blocks = new QGroupBox("LRA-QViT building blocks", this);
  auto* blockForm = new QFormLayout(blocks);
  wads_ = new QCheckBox("WADS (learned per-channel scales)", blocks);
  wads_->setToolTip(
      "Weight-aware distribution smoothing: per-channel scales learned against the weight-aware error and folded "
      "into the LayerNorms and value rows before the final layers, which are then refitted. Needs activation bits. "
      "DeiT-Tiny: 30-70 s for 36 points at 50 steps; +1.5 top-1 at W4A8 static, nothing at W3A8.");
  blockForm->addRow("", wads_);
  wadsSteps_ = spinBox(0, 100000, 10, " steps", blocks);
  addRow(blockForm, "WADS steps per point:", wadsSteps_,
         "Adam steps per scaled point (default 100); the time grows with it.");
  recoverySteps_ = spinBox(0, 100000, 10, " steps", blocks);
  recoverySteps_->setSpecialValueText("off");
  addRow(blockForm, "Recovery:", recoverySteps_,
         "Distillation against the float model after the final layers, training only the float biases and "
         "LayerNorm affines (the codes and bytes stay). 0 is off. DeiT-Tiny: 1.3-2.8 s per step of 8 images; 60 steps "
         "at lr 1e-3 on 128 images bought +1.1 to +1.6 top-1 at W3 and W4A8.");
  recoveryLr_ = new QDoubleSpinBox(blocks);
  recoveryLr_->setDecimals(6);
  recoveryLr_->setRange(0.000001, 0.1);
  recoveryLr_->setSingleStep(0.00005);
  addRow(blockForm, "Recovery learning rate:", recoveryLr_,
         "AdamW's peak learning rate (warm-up, then cosine decay). Default 1e-4; 1e-3 was better on DeiT-Tiny at "
         "3-4 bits (it diverged on the demo detector).");
  recoveryImages_ = spinBox(1, 100000, 16, " images", blocks);
  addRow(blockForm, "Recovery images:", recoveryImages_,
         "The analysis' calibration images first, then more of the calibration folder; left out of every "
         "evaluation. On 32 images the recovery overfits; 128 is the default.");
  layout->addWidget(blocks);

  // ---- Refit
  auto* refitGroup = new QGroupBox("Refit", this);
  auto* refitLayout = new QVBoxLayout(refitGroup);
  refit_ = new QCheckBox("refit every layer to the final model (§9)", refitGroup);
  refit_->setToolTip(
      "Recomputes every layer's codes and factors from the label-free Hessian of the final model (about 7 s on "
      "DeiT-Tiny). Always done with static activations and after WADS.");
  refitLayout->addWidget(refit_);
  layout->addWidget(refitGroup);

  // ---- Adaptive rounding
  auto* rounding = new QGroupBox("Adaptive rounding", this);
  auto* roundForm = new QFormLayout(rounding);
  round_ = new QCheckBox("learn the rounding (§10)", rounding);
  round_->setToolTip(
      "Learns whether each weight rounds up or down against the float model's outputs on the calibration "
      "images, after everything above; checkpointed in the cache folder, so a cancelled run resumes.");
  roundForm->addRow("", round_);
  perLayer_ = new QCheckBox("each layer alone (the spec's way)", rounding);
  perLayer_->setToolTip(
      "Unchecked (the default), a block's layers learn together against the block's float output, so their errors "
      "can cancel: DeiT-Tiny at 3 bits kept 74.2 % top-1 this way against 71.0 % layer by layer (float 77.4 %).");
  roundForm->addRow("", perLayer_);
  roundIters_ = spinBox(1, 100000, 100, " steps", rounding);
  addRow(roundForm, "Optimizer steps:", roundIters_,
         "Per block, or per layer when each learns alone (the spec uses 20000); 500 take about 5 minutes for "
         "DeiT-Tiny on 2 cores.");
  roundImages_ = spinBox(1, 100000, 16, " images", rounding);
  addRow(roundForm, "Rounding images:", roundImages_,
         "The analysis' calibration images first, then more of the calibration folder; left out of every "
         "evaluation.");
  roundViews_ = spinBox(0, 64, 1, " per image", rounding);
  addRow(roundForm, "Augmented views:", roundViews_,
         "Random crops and flips of each rounding image added to them: more rows for the class token's loss.");
  keepLearned_ = new QCheckBox("Cancel keeps the layers learned so far", rounding);
  keepLearned_->setToolTip(
      "Cancelling during the rounding keeps a final model whose finished layers are learned and the rest nearest; "
      "unchecked, Cancel discards the whole build.");
  roundForm->addRow("", keepLearned_);
  layout->addWidget(rounding);

  summary_ = new QLabel(this);
  summary_->setWordWrap(true);
  layout->addWidget(summary_);
  auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel, this);
  buttons->button(QDialogButtonBox::Ok)->setText("Build");
  connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
  connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
  layout->addWidget(buttons);

  for (QCheckBox* b : {mixed_, ridge_, wads_, refit_, round_, perLayer_, keepLearned_})
    connect(b, &QCheckBox::toggled, this, &FinalSettingsDialog::updateEnabled);
  for (QSpinBox* b : {wadsSteps_, recoverySteps_, recoveryImages_, roundIters_, roundImages_, roundViews_})
    connect(b, qOverload<int>(&QSpinBox::valueChanged), this, &FinalSettingsDialog::updateEnabled);
  connect(recoveryLr_, qOverload<double>(&QDoubleSpinBox::valueChanged), this, &FinalSettingsDialog::updateEnabled);
  connect(actBits_, qOverload<int>(&QComboBox::currentIndexChanged), this, &FinalSettingsDialog::updateEnabled);
  connect(perToken_, &QRadioButton::toggled, this, &FinalSettingsDialog::updateEnabled);
  setSettings(settings);
}

void FinalSettingsDialog::setSettings(const FinalSettings& s) {
  base_ = s;
  const int index = actBits_->findData(s.activation_bits);
  actBits_->setCurrentIndex(index < 0 ? 0 : index);
  (s.per_token_activations ? perToken_ : static_)->setChecked(true);
  mixed_->setChecked(s.activation_mp);
  ridge_->setChecked(s.ridge);
  wads_->setChecked(s.wads);
  wadsSteps_->setValue(s.wads_steps);
  recoverySteps_->setValue(s.recovery_steps);
  recoveryLr_->setValue(s.recovery_lr);
  recoveryImages_->setValue(s.recovery_images);
  refit_->setChecked(s.refit);
  round_->setChecked(s.round);
  roundIters_->setValue(s.round_iterations);
  roundImages_->setValue(s.round_images);
  roundViews_->setValue(s.round_views);
  perLayer_->setChecked(s.round_per_layer);
  keepLearned_->setChecked(s.keep_learned_on_cancel);
  updateEnabled();
}

FinalSettings FinalSettingsDialog::settings() const {
  FinalSettings s = base_;
  s.activation_bits = actBits_->currentData().toInt();
  const bool quantized = s.activation_bits > 0;
  s.per_token_activations = quantized && perToken_->isChecked();
  s.activation_mp = mixed_->isChecked();
  s.ridge = ridge_->isChecked();
  s.wads = quantized && wads_->isChecked();
  s.wads_steps = wadsSteps_->value();
  s.recovery_steps = recoverySteps_->value();
  s.recovery_lr = recoveryLr_->value();
  s.recovery_images = recoveryImages_->value();
  s.refit = refit_->isChecked();
  s.round = round_->isChecked();
  s.round_iterations = roundIters_->value();
  s.round_images = roundImages_->value();
  s.round_views = roundViews_->value();
  s.round_per_layer = perLayer_->isChecked();
  s.keep_learned_on_cancel = keepLearned_->isChecked();
  return s;
}

void FinalSettingsDialog::updateEnabled() {
  const bool quantized = actBits_->currentData().toInt() > 0;
  const bool staticActs = quantized && !perToken_->isChecked();
  static_->setEnabled(quantized);
  perToken_->setEnabled(quantized);
  mixed_->setEnabled(staticActs);
  ridge_->setEnabled(staticActs);
  wads_->setEnabled(quantized);
  wadsSteps_->setEnabled(quantized && wads_->isChecked());
  recoveryLr_->setEnabled(recoverySteps_->value() > 0);
  recoveryImages_->setEnabled(recoverySteps_->value() > 0);
  refit_->setEnabled(!staticActs);  // static activations refit anyway
  roundIters_->setEnabled(round_->isChecked());
  roundImages_->setEnabled(round_->isChecked());
  roundViews_->setEnabled(round_->isChecked());
  perLayer_->setEnabled(round_->isChecked());
  keepLearned_->setEnabled(round_->isChecked());
  summary_->setText("Builds: " + describeFinalSettings(settings()));
}
