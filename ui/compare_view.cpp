#include "compare_view.h"

#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QImageReader>
#include <QLabel>
#include <QListWidget>
#include <QPushButton>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>
#include <algorithm>

using namespace lorq::api;

namespace {
QPixmap thumbnail(const QString& path, int size) {
  QImageReader reader(path);
  reader.setAutoTransform(true);
  const QSize s = reader.size();
  if (s.isValid()) reader.setScaledSize(s.scaled(size, size, Qt::KeepAspectRatio));
  return QPixmap::fromImage(reader.read());
}

QString className(const ClassScore& c) {
  return c.label.empty() ? QString("class %1").arg(c.class_index) : QString::fromStdString(c.label);
}

QString evalText(const char* name, const EvalSummary& e) {
  if (e.labeled == 0) return QString("%1: %2 images (unlabeled)").arg(name).arg(e.images);
  return QString("%1: top-1 <b>%2%</b>, top-5 %3%").arg(name).arg(e.top1_pct, 0, 'f', 2).arg(e.top5_pct, 0, 'f', 2);
}
}  // namespace

CompareView::CompareView(QWidget* parent) : QWidget(parent) {
  auto* layout = new QVBoxLayout(this);
  layout->setContentsMargins(4, 4, 4, 4);
  auto* top = new QHBoxLayout();
  evaluate_ = new QPushButton("Evaluate float vs compressed", this);
  evaluate_->setToolTip("Run both models on the evaluation images (calibration images left out)  [F6]");
  limit_ = new QSpinBox(this);
  limit_->setRange(0, 1000000);
  limit_->setSpecialValueText("all images");
  limit_->setPrefix("limit ");
  limit_->setValue(0);
  auto* open = new QPushButton("Open image…", this);
  metrics_ = new QLabel("Not evaluated yet", this);
  metrics_->setTextFormat(Qt::RichText);
  top->addWidget(evaluate_);
  top->addWidget(limit_);
  top->addWidget(open);
  top->addWidget(metrics_, 1);
  layout->addLayout(top);

  // The image on the left, its caption and both top-5 lists beside it: nothing is drawn over the image.
  auto* split = new QSplitter(Qt::Horizontal, this);
  canvas_ = new QLabel(split);
  canvas_->setAlignment(Qt::AlignCenter);
  canvas_->setMinimumSize(80, 80);
  canvas_->setFrameShape(QFrame::StyledPanel);
  canvas_->setObjectName("compareCanvas");
  auto* details = new QWidget(split);
  auto* detailsLayout = new QVBoxLayout(details);
  detailsLayout->setContentsMargins(0, 0, 0, 0);
  caption_ = new QLabel(details);
  caption_->setWordWrap(true);
  caption_->setObjectName("compareCaption");
  caption_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  table_ = new QTableWidget(5, 5, details);
  table_->setHorizontalHeaderLabels({"Float class", "p", "Compressed class", "p", "Δp (float's class)"});
  table_->verticalHeader()->setVisible(true);
  table_->verticalHeader()->setDefaultSectionSize(table_->fontMetrics().height() + 6);  // five rows in a short dock
  table_->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
  table_->setEditTriggers(QAbstractItemView::NoEditTriggers);
  table_->setObjectName("compareTable");
  detailsLayout->addWidget(caption_);
  detailsLayout->addWidget(table_, 1);
  split->addWidget(canvas_);
  split->addWidget(details);
  split->setStretchFactor(1, 2);
  layout->addWidget(split, 1);

  strip_ = new QListWidget(this);
  strip_->setViewMode(QListView::IconMode);
  strip_->setFlow(QListView::LeftToRight);
  strip_->setWrapping(false);
  strip_->setIconSize(QSize(40, 40));
  strip_->setFixedHeight(76);
  strip_->setObjectName("changeStrip");
  strip_->setToolTip("Largest output change first (KL of the softmax outputs)");
  layout->addWidget(strip_);

  connect(evaluate_, &QPushButton::clicked, this, &CompareView::evaluateRequested);
  connect(open, &QPushButton::clicked, this, [this] {
    const QString f =
        QFileDialog::getOpenFileName(this, "Open an image", {}, "Images (*.png *.jpg *.jpeg *.bmp *.webp)");
    if (!f.isEmpty()) emit openImageRequested(f);
  });
  // Choosing an image (not the first one shown after an evaluation) asks for every class when the compressed
  // top-5 lacks one of the float classes, so its Δp can be filled.
  connect(strip_, &QListWidget::currentRowChanged, this, [this](int row) {
    if (!result_ || row < 0 || row >= static_cast<int>(result_->images.size())) return;
    const ImageComparison& image = result_->images[row];
    showImage(image);
    if (!settingResult_ && !allFloatClassesRanked(image)) emit detailsRequested(image);
  });
  connect(strip_, &QListWidget::itemClicked, this, [this](QListWidgetItem* item) {
    const int row = strip_->row(item);
    if (result_ && row >= 0 && row < static_cast<int>(result_->images.size()) &&
        !allFloatClassesRanked(result_->images[row]))
      emit detailsRequested(result_->images[row]);
  });
}

bool CompareView::allFloatClassesRanked(const ImageComparison& image) {
  for (const ClassScore& f : image.float_top) {
    bool found = false;
    for (const ClassScore& c : image.compressed_top) found |= c.class_index == f.class_index;
    if (!found) return false;
  }
  return true;
}

int CompareView::limit() const { return limit_->value(); }

void CompareView::setResult(const ComparisonResult& result) {
  result_ = std::make_shared<ComparisonResult>(result);
  QString m = evalText("Float", result.float_eval) + " &nbsp;·&nbsp; " + evalText("Compressed", result.compressed_eval);
  m += QString(" &nbsp;(%1 images").arg(result.float_eval.images);
  if (!result.float_eval.failed.empty()) m += QString(", %1 unreadable").arg(result.float_eval.failed.size());
  metrics_->setText(m + ")");
  strip_->clear();
  // Thumbnails for the most changed images only: a 50k-image set must not stall the UI.
  const int shown = std::min<int>(static_cast<int>(result.images.size()), 200);
  for (int i = 0; i < shown; ++i) {
    const ImageComparison& c = result.images[i];
    auto* item = new QListWidgetItem(QIcon(thumbnail(QString::fromStdString(c.path), 56)),
                                     QString("KL %1").arg(c.kl, 0, 'g', 2), strip_);
    item->setToolTip(QString("%1\nKL %2, max |Δp| %3")
                         .arg(QString::fromStdString(c.path))
                         .arg(c.kl, 0, 'g', 3)
                         .arg(c.max_prob_change, 0, 'f', 3));
  }
  settingResult_ = true;
  if (shown > 0) strip_->setCurrentRow(0);
  settingResult_ = false;
}

void CompareView::showImage(const ImageComparison& image, const std::vector<ClassScore>* compressedAll) {
  const QString path = QString::fromStdString(image.path);
  // Fitted to the canvas, so a short dock shows the whole image rather than its corner.
  const int side = std::clamp(std::min(canvas_->width(), canvas_->height()) - 4, 64, 256);
  const QPixmap pix = thumbnail(path, side);
  canvas_->setPixmap(pix.isNull() ? QPixmap() : pix);
  if (pix.isNull()) canvas_->setText("cannot display " + QFileInfo(path).fileName());
  QString caption = QFileInfo(path).fileName().toHtmlEscaped();
  if (image.label >= 0) {
    QString name = className_ ? className_(image.label) : QString("class %1").arg(image.label);
    for (const auto* list : {&image.float_top, &image.compressed_top})
      for (const ClassScore& c : *list)
        if (c.class_index == image.label && !c.label.empty()) name = QString::fromStdString(c.label);
    caption += QString(" — true class: <b>%1</b>").arg(name.toHtmlEscaped());
  }
  caption += QString(" — KL %1, max |Δp| %2").arg(image.kl, 0, 'g', 3).arg(image.max_prob_change, 0, 'f', 3);
  caption_->setTextFormat(Qt::RichText);
  caption_->setText(caption);
  table_->clearContents();
  for (int r = 0; r < 5; ++r) {
    if (r < static_cast<int>(image.float_top.size())) {
      const ClassScore& f = image.float_top[r];
      table_->setItem(r, 0, new QTableWidgetItem(className(f)));
      table_->setItem(r, 1, new QTableWidgetItem(QString::number(f.probability, 'f', 3)));
      // The float class's probability under the compressed model, when it is in the compressed top-k.
      const std::vector<ClassScore>& compressed = compressedAll ? *compressedAll : image.compressed_top;
      for (const ClassScore& c : compressed)
        if (c.class_index == f.class_index) {
          const double d = c.probability - f.probability;
          auto* item = new QTableWidgetItem(QString("%1%2").arg(d >= 0 ? "+" : "").arg(d, 0, 'f', 3));
          item->setForeground(d >= 0 ? QColor(0, 120, 0) : QColor(180, 0, 0));
          table_->setItem(r, 4, item);
        }
      if (!table_->item(r, 4)) {
        auto* item = new QTableWidgetItem("not in the compressed top-5");
        item->setForeground(QColor(120, 120, 120));
        item->setToolTip("Click the image in the strip to run both models on every class");
        table_->setItem(r, 4, item);
      }
      if (image.label >= 0 && f.class_index == image.label) table_->item(r, 0)->setBackground(QColor(220, 245, 220));
    }
    if (r < static_cast<int>(image.compressed_top.size())) {
      const ClassScore& c = image.compressed_top[r];
      table_->setItem(r, 2, new QTableWidgetItem(className(c)));
      table_->setItem(r, 3, new QTableWidgetItem(QString::number(c.probability, 'f', 3)));
      if (image.label >= 0 && c.class_index == image.label) table_->item(r, 2)->setBackground(QColor(220, 245, 220));
    }
  }
}

void CompareView::markStale() {
  if (result_ && !metrics_->text().startsWith("<i>"))
    metrics_->setText("<i>(previous allocation)</i> " + metrics_->text());
}

void CompareView::clear() {
  result_.reset();
  metrics_->setText("Not evaluated yet");
  strip_->clear();
  canvas_->clear();
  caption_->clear();
  table_->clearContents();
}
