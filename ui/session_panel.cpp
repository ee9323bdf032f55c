#include "session_panel.h"

#include <QAbstractScrollArea>
#include <QCheckBox>
#include <QComboBox>
#include <QCoreApplication>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QImageReader>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPushButton>
#include <QScrollBar>
#include <QSignalBlocker>
#include <QSpinBox>
#include <QVBoxLayout>
#include <QWheelEvent>

#include "final_settings_dialog.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {
constexpr int kThumbnails = 24;     // shown
constexpr int kHeaderChecks = 300;  // files whose header is checked for decodability
}  // namespace

SessionPanel::SessionPanel(WorkbenchDocument* document, QWidget* parent) : QWidget(parent), document_(document) {
  auto spin = [this](QWidget* parent, int lo, int hi, const QString& tip) {
    auto* s = new QSpinBox(parent);
    s->setRange(lo, hi);
    s->setToolTip(tip);
    s->setFocusPolicy(Qt::StrongFocus);  // no focus from the wheel, so an unfocused box ignores it
    s->installEventFilter(this);
    return s;
  };
  auto* layout = new QVBoxLayout(this);

  auto* modelBox = new QGroupBox("Model", this);
  auto* ml = new QVBoxLayout(modelBox);
  model_ = new QLabel("No model loaded", modelBox);
  model_->setWordWrap(true);
  model_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  auto* mrow = new QHBoxLayout();
  auto* openModel = new QPushButton("Open…", modelBox);
  auto* demo = new QPushButton("Demo", modelBox);
  demo->setToolTip("The embedded demo ViT and its shapes images");
  mrow->addWidget(openModel);
  mrow->addWidget(demo);
  mrow->addStretch(1);
  ml->addWidget(model_);
  ml->addLayout(mrow);
  layout->addWidget(modelBox);

  auto* calibBox = new QGroupBox("Calibration images", this);
  auto* cl = new QVBoxLayout(calibBox);
  calibInfo_ = new QLabel("No images chosen", calibBox);
  calibInfo_->setWordWrap(true);
  auto* chooseCalib = new QPushButton("Choose folder…", calibBox);
  thumbnails_ = new QListWidget(calibBox);
  thumbnails_->setViewMode(QListView::IconMode);
  thumbnails_->setIconSize(QSize(40, 40));
  thumbnails_->setResizeMode(QListView::Adjust);
  thumbnails_->setMovement(QListView::Static);
  thumbnails_->setMinimumHeight(60);
  thumbnails_->setMaximumHeight(110);
  calibWarning_ = new QLabel(calibBox);
  calibWarning_->setWordWrap(true);
  calibWarning_->setObjectName("calibrationWarning");
  calibWarning_->hide();
  cl->addWidget(calibInfo_);
  cl->addWidget(calibWarning_);
  cl->addWidget(chooseCalib);
  cl->addWidget(thumbnails_);
  layout->addWidget(calibBox);

  auto* evalBox = new QGroupBox("Evaluation images (optional, labeled)", this);
  auto* el = new QFormLayout(evalBox);
  evalImages_ = new QLineEdit(evalBox);
  evalImages_->setPlaceholderText("same as calibration");
  evalLabels_ = new QLineEdit(evalBox);
  evalLabels_->setPlaceholderText("labels.csv (optional)");
  auto* chooseEval = new QPushButton("Choose…", evalBox);
  el->addRow("Folder", evalImages_);
  el->addRow("Labels", evalLabels_);
  el->addRow(chooseEval);
  layout->addWidget(evalBox);

  auto* settingsBox = new QGroupBox("Analysis settings", this);
  auto* sl = new QFormLayout(settingsBox);
  calibCount_ = spin(settingsBox, 1, 100000, "Images for the float reference and the global errors");
  calibCount_->setObjectName("calibrationCount");
  lfhImages_ = spin(settingsBox, 1, 100000, "Of those, images for the label-free Hessian");
  projections_ = spin(settingsBox, 1, 10000, "Random projections per image for the label-free Hessian");
  anchors_ = spin(settingsBox, 2, 1000, "Measured ranks per factor-bit pair (others interpolated)");
  estimate_ = new QCheckBox("Estimate global errors from the LFH (fast)", settingsBox);
  calibrated_ = new QCheckBox("Measure Q2–Q4 and one rank per factor-bit pair; scale the other estimates", settingsBox);
  calibrated_->setObjectName("calibratedErrors");
  calibrated_->setToolTip(
      "Calibrated global errors: the other options get their LFH estimate times a measured\n"
      "neighbour's measured/estimated ratio. On DeiT-Tiny the global error stage takes 45% of\n"
      "the time of measuring every anchor, with the same 3- and 4-bit allocations' accuracy.");
  quantizer_ = new QComboBox(settingsBox);
  quantizer_->setObjectName("quantizer");
  quantizer_->addItem("Nearest rounding", "nearest");
  quantizer_->addItem("GPTQ (error compensation)", "gptq");
  quantizer_->setToolTip(
      "How each option's codes are rounded on its grid: to nearest, or column by column with the\n"
      "rounding error compensated through the layer's input moment XᵀX (GPTQ; errors cross-fitted)");
  gptqImages_ = spin(settingsBox, 0, 100000,
                     "GPTQ's moments XᵀX from this many images: the calibration images, then the next images of\n"
                     "the set (left out of evaluation too). More images = better compensation at 3 bits (its fit\n"
                     "follows the images' noise less); the cost is one float pass per 32 images, before the\n"
                     "candidates. At or below the calibration count: the calibration images only.");
  gptqImages_->setObjectName("gptqImages");
  gptqImages_->setSpecialValueText("calibration");
  gptqImages_->setSingleStep(32);
  auto* quantizerRow = new QHBoxLayout();
  quantizerRow->addWidget(quantizer_, 1);
  quantizerRow->addWidget(new QLabel("moment images", settingsBox));
  quantizerRow->addWidget(gptqImages_);
  auto* fast = new QPushButton("Fast settings", settingsBox);
  fast->setToolTip("Few images and projections: a quick first look");
  sl->addRow("Calibration images", calibCount_);
  sl->addRow("LFH images", lfhImages_);
  sl->addRow("Projections", projections_);
  sl->addRow("Anchors", anchors_);
  sl->addRow("Quantizer", quantizerRow);
  sl->addRow(estimate_);
  sl->addRow(calibrated_);
  sl->addRow(fast);
  layout->addWidget(settingsBox);
  layout->addStretch(1);

  analyzeBar_ = new QWidget(this);
  auto* bar = new QVBoxLayout(analyzeBar_);
  bar->setContentsMargins(9, 4, 9, 4);
  analyze_ = new QPushButton("Run analysis", analyzeBar_);
  analyze_->setToolTip("Calibration, sensitivity, candidates and global errors (cached per model and settings)  [F5]");
  analyze_->setObjectName("analyzeButton");
  analysis_ = new QLabel(analyzeBar_);
  analysis_->setWordWrap(true);
  final_ = new QLabel(analyzeBar_);
  final_->setObjectName("finalModelLine");
  final_->setWordWrap(true);
  final_->setToolTip("The model evaluation and export use after the allocation (Analysis › Final model…)");
  bar->addWidget(analyze_);
  bar->addWidget(analysis_);
  bar->addWidget(final_);
  analyzeBar_->setParent(nullptr);  // the window places it

  connect(openModel, &QPushButton::clicked, this, &SessionPanel::openModelRequested);
  connect(demo, &QPushButton::clicked, this, &SessionPanel::openDemoRequested);
  connect(chooseCalib, &QPushButton::clicked, this, &SessionPanel::chooseCalibrationRequested);
  connect(chooseEval, &QPushButton::clicked, this, &SessionPanel::chooseEvalRequested);
  connect(analyze_, &QPushButton::clicked, this, &SessionPanel::analyzeRequested);
  connect(fast, &QPushButton::clicked, this, [this] {
    AnalysisSettings s = AnalysisSettings::fast();  // fewer images and projections, the same quantizer
    s.quantizer = document_->settings().quantizer;
    s.gptq_images = document_->settings().gptq_images;
    s.gptq_damping = document_->settings().gptq_damping;  // a session file's fixed damping, or automatic
    document_->setSettings(s);
  });
  for (QSpinBox* s : {calibCount_, lfhImages_, projections_, anchors_, gptqImages_})
    connect(s, qOverload<int>(&QSpinBox::valueChanged), this, &SessionPanel::commitSettings);
  connect(estimate_, &QCheckBox::toggled, this, &SessionPanel::commitSettings);
  connect(calibrated_, &QCheckBox::toggled, this, &SessionPanel::commitSettings);
  connect(quantizer_, qOverload<int>(&QComboBox::currentIndexChanged), this, &SessionPanel::commitSettings);
  connect(evalImages_, &QLineEdit::editingFinished, this, &SessionPanel::commitEval);
  connect(evalLabels_, &QLineEdit::editingFinished, this, &SessionPanel::commitEval);

  connect(document_, &WorkbenchDocument::modelChanged, this, &SessionPanel::onModel);
  connect(document_, &WorkbenchDocument::sourcesChanged, this, &SessionPanel::onSources);
  connect(document_, &WorkbenchDocument::sessionChanged, this, &SessionPanel::onSession);
  connect(document_, &WorkbenchDocument::analysisRefined, this, &SessionPanel::onSession);
  for (auto signal :
       {&WorkbenchDocument::finalChanged, &WorkbenchDocument::allocationChanged, &WorkbenchDocument::modelChanged})
    connect(document_, signal, this, &SessionPanel::showFinalModel);
  showFinalModel();
  onModel();
  onSources();
  onSession();
}

bool SessionPanel::eventFilter(QObject* watched, QEvent* event) {
  auto* box = qobject_cast<QSpinBox*>(watched);
  if (box && event->type() == QEvent::Wheel && !box->hasFocus()) {
    // The panel scrolls instead: the wheel goes to the enclosing scroll area, the value stays.
    for (QWidget* w = parentWidget(); w; w = w->parentWidget())
      if (auto* area = qobject_cast<QAbstractScrollArea*>(w)) {
        QCoreApplication::sendEvent(area->verticalScrollBar(), event);
        break;
      }
    return true;
  }
  return QWidget::eventFilter(watched, event);
}

void SessionPanel::onModel() {
  const ModelSummary& s = document_->model();
  const QString path = document_->modelPath();
  if (path.isEmpty()) {
    model_->setText("No model loaded");
    return;
  }
  model_->setText(QString("<b>%1</b><br>%2 — %3 blocks, dim %4, %5 classes, %6 px; %7 layers, %8 M weights")
                      .arg(QFileInfo(path).fileName().toHtmlEscaped(), QString::fromStdString(s.architecture))
                      .arg(s.depth)
                      .arg(s.embed_dim)
                      .arg(s.num_classes)
                      .arg(s.image_size)
                      .arg(s.layers.size())
                      .arg(s.compressible_params / 1e6, 0, 'f', 2));
  model_->setToolTip(path);
}

void SessionPanel::onSources() {
  if (document_->calibrationImages() != shownImages_ || document_->calibrationLabels() != shownLabels_)
    showCalibration();
  if (evalImages_->text() != document_->evalImagesSetting()) evalImages_->setText(document_->evalImagesSetting());
  if (evalLabels_->text() != document_->evalLabelsSetting()) evalLabels_->setText(document_->evalLabelsSetting());
  const AnalysisSettings& s = document_->settings();
  const QSignalBlocker b1(calibCount_), b2(lfhImages_), b3(projections_), b4(anchors_), b5(estimate_), b6(calibrated_),
      b7(quantizer_), b8(gptqImages_);
  calibCount_->setValue(s.calibration_images);
  lfhImages_->setValue(s.lfh_images);
  projections_->setValue(s.projections);
  anchors_->setValue(s.anchors);
  estimate_->setChecked(s.estimate);
  calibrated_->setChecked(s.calibrated_errors);
  calibrated_->setEnabled(!s.estimate);  // nothing is measured with estimates
  const int quantizer = quantizer_->findData(QString::fromStdString(s.quantizer));
  quantizer_->setCurrentIndex(quantizer >= 0 ? quantizer : 0);
  gptqImages_->setValue(s.gptq_images);
  gptqImages_->setEnabled(s.quantizer == "gptq");  // only compensation uses the moments
  // Said before the analysis starts: a folder smaller than the calibration count gives fewer images than asked.
  const int64_t available = document_->calibrationImages().isEmpty() ? -1 : document_->calibrationInfo().images;
  const bool tooFew = available >= 0 && available < s.calibration_images;
  calibWarning_->setText(tooFew ? QString("<span style='color:#b00'>%1 calibration images asked, the folder holds "
                                          "only %2: the analysis will use %2</span>")
                                      .arg(s.calibration_images)
                                      .arg(available)
                                : QString());
  calibWarning_->setVisible(tooFew);
}

void SessionPanel::onSession() {
  const auto& s = document_->session();
  if (!s || !s->analyzed()) {
    analysis_->setText(document_->hasModel() ? "Not analyzed" : "");
    return;
  }
  QString text;
  for (const auto& [stage, sec] : s->stage_seconds())
    text += QString("%1 %2 s · ").arg(QString::fromStdString(stage)).arg(sec, 0, 'f', 1);
  text += QString("%1 layers, %2 calibration images").arg(s->layers().size()).arg(s->calibration_files().size());
  text += QString("<br>global errors: %1").arg(QString::fromStdString(s->global_errors().text()));
  if (!s->warnings().empty()) text += QString("<br>%1 warnings (see Jobs)").arg(s->warnings().size());
  analysis_->setText(text);
}

void SessionPanel::showFinalModel() {
  final_->setText(document_->hasModel() ? describeFinalModel(*document_) : QString());
}

void SessionPanel::showCalibrationProblem(const QString& problem) {
  calibInfo_->setText("<span style='color:#b00'>" + problem.toHtmlEscaped() + "</span>");
  shownImages_.clear();
  shownLabels_.clear();
}

void SessionPanel::showCalibration() {
  shownImages_ = document_->calibrationImages();
  shownLabels_ = document_->calibrationLabels();
  thumbnails_->clear();
  if (shownImages_.isEmpty()) {
    calibInfo_->setText("No images chosen");
    return;
  }
  const ImageSetInfo& info = document_->calibrationInfo();
  // A header check finds files that will not decode without decoding them (cheap even for big folders).
  QStringList unreadable;
  const int checks = std::min<int>(static_cast<int>(info.files.size()), kHeaderChecks);
  for (int i = 0; i < checks; ++i) {
    const QString f = QString::fromStdString(info.files[i]);
    QImageReader reader(f);
    if (!reader.canRead()) unreadable << QFileInfo(f).fileName();
    if (i < kThumbnails) {
      reader.setScaledSize(QSize(40, 40));
      reader.setAutoTransform(true);
      auto* item = new QListWidgetItem(QIcon(QPixmap::fromImage(reader.read())), {}, thumbnails_);
      item->setToolTip(f);
    }
  }
  QString text = QString("<b>%1</b> images in %2").arg(info.images).arg(QFileInfo(shownImages_).fileName());
  if (info.labeled) text += QString(", %1 labeled").arg(info.labeled);
  if (!info.skipped.empty()) text += QString(", %1 non-image files skipped").arg(info.skipped.size());
  if (!unreadable.isEmpty()) {
    // Named, not only counted (the tooltip lists up to 30).
    QStringList named = unreadable.mid(0, 5);
    for (QString& n : named) n = n.toHtmlEscaped();
    text += QString("<br><span style='color:#b00'>%1 of the first %2 cannot be decoded: %3%4</span>")
                .arg(unreadable.size())
                .arg(checks)
                .arg(named.join(", "))
                .arg(unreadable.size() > 5 ? QString(", … %1 more").arg(unreadable.size() - 5) : QString());
  }
  calibInfo_->setText(text);
  calibInfo_->setToolTip(unreadable.isEmpty() ? shownImages_ : "Cannot decode:\n" + unreadable.mid(0, 30).join("\n"));
}

void SessionPanel::commitSettings() {
  AnalysisSettings s = document_->settings();
  s.calibration_images = calibCount_->value();
  s.lfh_images = lfhImages_->value();
  s.projections = projections_->value();
  s.anchors = anchors_->value();
  s.estimate = estimate_->isChecked();
  s.calibrated_errors = calibrated_->isChecked();
  s.quantizer = quantizer_->currentData().toString().toStdString();
  s.gptq_images = gptqImages_->value();
  document_->setSettings(s);
}

void SessionPanel::commitEval() { document_->setEval(evalImages_->text(), evalLabels_->text()); }

void SessionPanel::setBusy(bool busy) { analyze_->setEnabled(!busy); }
