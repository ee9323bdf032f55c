#include "session_panel.h"

#include <QCheckBox>
#include <QFileInfo>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QImageReader>
#include <QLabel>
#include <QLineEdit>
#include <QListWidget>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>

using namespace lorq::api;

namespace {
QSpinBox* spin(QWidget* parent, int lo, int hi, const QString& tip) {
  auto* s = new QSpinBox(parent);
  s->setRange(lo, hi);
  s->setToolTip(tip);
  return s;
}
constexpr int kThumbnails = 24;     // shown
constexpr int kHeaderChecks = 300;  // files whose header is checked for decodability
}  // namespace

SessionPanel::SessionPanel(QWidget* parent) : QWidget(parent) {
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
  cl->addWidget(calibInfo_);
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
  lfhImages_ = spin(settingsBox, 1, 100000, "Of those, images for the label-free Hessian");
  projections_ = spin(settingsBox, 1, 10000, "Random projections per image for the label-free Hessian");
  anchors_ = spin(settingsBox, 2, 1000, "Measured ranks per factor-bit pair (others interpolated)");
  estimate_ = new QCheckBox("Estimate global errors from the LFH (fast)", settingsBox);
  auto* fast = new QPushButton("Fast settings", settingsBox);
  fast->setToolTip("Few images and projections: a quick first look");
  sl->addRow("Calibration images", calibCount_);
  sl->addRow("LFH images", lfhImages_);
  sl->addRow("Projections", projections_);
  sl->addRow("Anchors", anchors_);
  sl->addRow(estimate_);
  sl->addRow(fast);
  layout->addWidget(settingsBox);
  setSettings(AnalysisSettings());

  analyze_ = new QPushButton("Run analysis", this);
  analyze_->setToolTip("Calibration, sensitivity, candidates and global errors (cached per model and settings)  [F5]");
  analyze_->setObjectName("analyzeButton");
  analysis_ = new QLabel(this);
  analysis_->setWordWrap(true);
  layout->addWidget(analyze_);
  layout->addWidget(analysis_);
  layout->addStretch(1);

  connect(openModel, &QPushButton::clicked, this, &SessionPanel::openModelRequested);
  connect(demo, &QPushButton::clicked, this, &SessionPanel::openDemoRequested);
  connect(chooseCalib, &QPushButton::clicked, this, &SessionPanel::chooseCalibrationRequested);
  connect(chooseEval, &QPushButton::clicked, this, &SessionPanel::chooseEvalRequested);
  connect(analyze_, &QPushButton::clicked, this, &SessionPanel::analyzeRequested);
  connect(fast, &QPushButton::clicked, this, [this] {
    setSettings(AnalysisSettings::fast());
    emit settingsChanged();
  });
}

void SessionPanel::setModelText(const QString& path, const QString& description) {
  model_->setText(description.isEmpty() ? path
                                        : QString("<b>%1</b><br>%2").arg(QFileInfo(path).fileName(), description));
  model_->setToolTip(path);
}

QString SessionPanel::setCalibration(const QString& images, const QString& labels) {
  calibImages_ = images;
  calibLabels_ = labels;
  thumbnails_->clear();
  ImageSetInfo info;
  try {
    info = list_image_set(images.toStdString(), labels.toStdString());
  } catch (const std::exception& e) {
    const QString problem = QString::fromStdString(e.what());
    calibInfo_->setText("<span style='color:#b00'>" + problem.toHtmlEscaped() + "</span>");
    return problem;
  }
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
  QString text = QString("<b>%1</b> images in %2").arg(info.images).arg(QFileInfo(images).fileName());
  if (info.labeled) text += QString(", %1 labeled").arg(info.labeled);
  if (!info.skipped.empty()) text += QString(", %1 non-image files skipped").arg(info.skipped.size());
  if (!unreadable.isEmpty())
    text += QString("<br><span style='color:#b00'>%1 of the first %2 cannot be decoded</span>")
                .arg(unreadable.size())
                .arg(checks);
  calibInfo_->setText(text);
  calibInfo_->setToolTip(unreadable.isEmpty() ? images : "Cannot decode:\n" + unreadable.mid(0, 30).join("\n"));
  return {};
}

void SessionPanel::setEval(const QString& images, const QString& labels) {
  evalImages_->setText(images);
  evalLabels_->setText(labels);
}

QString SessionPanel::evalImages() const { return evalImages_->text().isEmpty() ? calibImages_ : evalImages_->text(); }

QString SessionPanel::evalLabels() const {
  return evalImages_->text().isEmpty() && evalLabels_->text().isEmpty() ? calibLabels_ : evalLabels_->text();
}

AnalysisSettings SessionPanel::settings() const {
  AnalysisSettings s;
  s.calibration_images = calibCount_->value();
  s.lfh_images = lfhImages_->value();
  s.projections = projections_->value();
  s.anchors = anchors_->value();
  s.estimate = estimate_->isChecked();
  return s;
}

void SessionPanel::setSettings(const AnalysisSettings& s) {
  calibCount_->setValue(s.calibration_images);
  lfhImages_->setValue(s.lfh_images);
  projections_->setValue(s.projections);
  anchors_->setValue(s.anchors);
  estimate_->setChecked(s.estimate);
}

void SessionPanel::setAnalysisText(const QString& text) { analysis_->setText(text); }

void SessionPanel::setBusy(bool busy) { analyze_->setEnabled(!busy); }
