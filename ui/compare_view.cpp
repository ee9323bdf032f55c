#include "compare_view.h"

#include <QCheckBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QImageReader>
#include <QLabel>
#include <QListWidget>
#include <QPainter>
#include <QPushButton>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <map>

#include "task_canvas.h"

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

TaskKind taskOfImage(const ImageComparison& image, TaskKind fallback) {
  if (!image.float_map.empty() || !image.compressed_map.empty()) return TaskKind::Segmentation;
  if (!image.float_detections.empty() || !image.compressed_detections.empty()) return TaskKind::Detection;
  return fallback;
}

double changedFraction(const ImageComparison& image) {
  // Counted on the maps at the image's size when both are there; the engine's ranking key otherwise.
  const lorq::LabelMap &a = image.float_map, &b = image.compressed_map;
  if (!a.empty() && a.width == b.width && a.height == b.height && a.classes.size() == b.classes.size())
    return changedPixelFraction(a, b);
  return image.change;
}

QTableWidgetItem* item(const QString& text, const QColor& foreground = QColor()) {
  auto* i = new QTableWidgetItem(text);
  if (foreground.isValid()) i->setForeground(foreground);
  return i;
}
}  // namespace

QString CompareView::metricsText(const char* name, const EvalSummary& e, bool rich) {
  if (e.labeled == 0) return QString("%1: %2 images (unlabeled)").arg(name).arg(e.images);
  std::vector<MetricValue> metrics = e.metrics;
  if (metrics.empty()) metrics = {{"top-1", e.top1_pct, true}, {"top-5", e.top5_pct, true}};
  QStringList parts;
  for (size_t i = 0; i < metrics.size(); ++i) {
    const MetricValue& m = metrics[i];
    QString value = m.percent ? QString("%1%").arg(m.value, 0, 'f', 2) : QString::number(m.value, 'g', 4);
    if (rich && i == 0) value = "<b>" + value + "</b>";  // the task's headline metric
    parts << QString("%1 %2").arg(QString::fromStdString(m.name), value);
  }
  return QString("%1: %2").arg(name, parts.join(", "));
}

TaskKind CompareView::taskOf(const ComparisonResult& result, TaskKind fallback) {
  for (const ImageComparison& image : result.images) {
    const TaskKind t = taskOfImage(image, TaskKind::Classification);
    if (t != TaskKind::Classification) return t;
  }
  return fallback;
}

QImage CompareView::stripThumbnail(const ImageComparison& image, TaskKind task, int size) {
  QImage thumb = thumbnail(QString::fromStdString(image.path), size).toImage().convertToFormat(QImage::Format_RGB32);
  if (thumb.isNull() || task == TaskKind::Classification) return thumb;
  if (task == TaskKind::Segmentation) {
    // Each thumbnail pixel samples the maps at its centre: red where the two classes differ there.
    const lorq::LabelMap &a = image.float_map, &b = image.compressed_map;
    if (a.empty() || a.width != b.width || a.height != b.height || a.classes.size() != b.classes.size()) return thumb;
    const QRgb red = TaskCanvas::disagreementColor().rgb();
    for (int y = 0; y < thumb.height(); ++y) {
      auto* row = reinterpret_cast<QRgb*>(thumb.scanLine(y));
      const int my = std::min(a.height - 1, static_cast<int>((y + 0.5) * a.height / thumb.height()));
      for (int x = 0; x < thumb.width(); ++x) {
        const int mx = std::min(a.width - 1, static_cast<int>((x + 0.5) * a.width / thumb.width()));
        if (a.at(mx, my) != b.at(mx, my)) row[x] = red;
      }
    }
    return thumb;
  }
  // Detection: the boxes at Hugging Face's default threshold (the strip's counts), one pixel wide, solid.
  const int w = image.width > 0 ? image.width : QImageReader(QString::fromStdString(image.path)).size().width();
  if (w <= 0) return thumb;
  const double scale = static_cast<double>(thumb.width()) / w;
  const std::vector<lorq::Detection> f = detectionsAbove(image.float_detections, 0.5),
                                     c = detectionsAbove(image.compressed_detections, 0.5);
  const std::vector<int> match = matchDetections(f, c);
  std::vector<char> matched(c.size(), 0);
  for (int j : match)
    if (j >= 0) matched[j] = 1;
  QPainter p(&thumb);
  auto draw = [&](const lorq::Detection& d, BoxFate fate) {
    p.setPen(TaskCanvas::fateColor(fate));
    p.drawRect(QRectF(d.x0 * scale, d.y0 * scale, (d.x1 - d.x0) * scale, (d.y1 - d.y0) * scale).toRect());
  };
  for (size_t i = 0; i < f.size(); ++i) draw(f[i], match[i] >= 0 ? BoxFate::Matched : BoxFate::Lost);
  for (size_t j = 0; j < c.size(); ++j)
    if (!matched[j]) draw(c[j], BoxFate::New);
  return thumb;
}

QString CompareView::changeText(const ImageComparison& image, TaskKind task) {
  switch (task) {
    case TaskKind::Detection:
      return QString("−%1 +%2").arg(image.lost).arg(image.added);
    case TaskKind::Segmentation:
      return QString("%1% px").arg(100 * changedFraction(image), 0, 'f', 1);
    default:
      return QString("KL %1").arg(image.kl, 0, 'g', 2);
  }
}

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
  canvas_ = new TaskCanvas(split);
  canvas_->setMinimumSize(80, 80);
  canvas_->setObjectName("compareCanvas");
  auto* details = new QWidget(split);
  auto* detailsLayout = new QVBoxLayout(details);
  detailsLayout->setContentsMargins(0, 0, 0, 0);
  caption_ = new QLabel(details);
  caption_->setWordWrap(true);
  caption_->setObjectName("compareCaption");
  caption_->setTextInteractionFlags(Qt::TextSelectableByMouse);
  // The task's controls: side by side or overlaid, the score threshold (detection), the mask opacity
  // (segmentation). Each move only repaints the canvas from its cached images.
  controls_ = new QWidget(details);
  auto* controlsLayout = new QHBoxLayout(controls_);
  controlsLayout->setContentsMargins(0, 0, 0, 0);
  overlay_ = new QCheckBox("Overlay", controls_);
  overlay_->setToolTip("Both models in one panel instead of side by side");
  overlay_->setObjectName("compareOverlay");
  thresholdLabel_ = new QLabel(controls_);
  threshold_ = new QSlider(Qt::Horizontal, controls_);
  threshold_->setRange(5, 100);
  threshold_->setValue(50);
  threshold_->setToolTip("Boxes of either model scoring below this are hidden; matching follows the shown boxes");
  threshold_->setObjectName("compareThreshold");
  opacityLabel_ = new QLabel(controls_);
  opacity_ = new QSlider(Qt::Horizontal, controls_);
  opacity_->setRange(0, 100);
  opacity_->setValue(50);
  opacity_->setToolTip("Opacity of the class colours over the image");
  opacity_->setObjectName("compareOpacity");
  controlsLayout->addWidget(overlay_);
  controlsLayout->addWidget(thresholdLabel_);
  controlsLayout->addWidget(threshold_, 1);
  controlsLayout->addWidget(opacityLabel_);
  controlsLayout->addWidget(opacity_, 1);
  detailsLayout->addWidget(controls_);
  canvas_->setScoreThreshold(threshold_->value() / 100.0);
  canvas_->setOpacity(opacity_->value() / 100.0);
  thresholdLabel_->setText(QString("score ≥ %1").arg(canvas_->scoreThreshold(), 0, 'f', 2));
  opacityLabel_->setText(QString("mask opacity %1%").arg(opacity_->value()));
  controls_->hide();
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
  split->setStretchFactor(0, 1);  // boxes and masks want as much room as the lists beside them
  split->setStretchFactor(1, 1);
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

  connect(overlay_, &QCheckBox::toggled, this,
          [this](bool on) { canvas_->setMode(on ? TaskCanvas::Mode::Overlay : TaskCanvas::Mode::SideBySide); });
  connect(threshold_, &QSlider::valueChanged, this, [this](int v) {
    canvas_->setScoreThreshold(v / 100.0);
    thresholdLabel_->setText(QString("score ≥ %1").arg(v / 100.0, 0, 'f', 2));
    if (canvas_->task() == TaskKind::Detection) fillDetectionTable();
  });
  connect(opacity_, &QSlider::valueChanged, this, [this](int v) {
    canvas_->setOpacity(v / 100.0);
    opacityLabel_->setText(QString("mask opacity %1%").arg(v));
  });
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

void CompareView::showControlsFor(TaskKind task) {
  controls_->setVisible(task != TaskKind::Classification);
  for (QWidget* w : {static_cast<QWidget*>(thresholdLabel_), static_cast<QWidget*>(threshold_)})
    w->setVisible(task == TaskKind::Detection);
  for (QWidget* w : {static_cast<QWidget*>(opacityLabel_), static_cast<QWidget*>(opacity_)})
    w->setVisible(task == TaskKind::Segmentation);
}

void CompareView::setResult(const ComparisonResult& result) {
  result_ = std::make_shared<ComparisonResult>(result);
  task_ = taskOf(result, task_);
  QString m = metricsText("Float", result.float_eval, true) + " &nbsp;·&nbsp; " +
              metricsText("Compressed", result.compressed_eval, true);
  const EvalSummary& c = result.compressed_eval;
  // Denser than top-1 against the labels, where a point is a few images flipping either way.
  if (c.has_fidelity)
    m += QString(" &nbsp;·&nbsp; same top-1 as float on %1%, output NSR %2")
             .arg(c.agreement_pct, 0, 'f', 1)
             .arg(c.output_nsr, 0, 'g', 3);
  m += QString(" &nbsp;(%1 images").arg(result.float_eval.images);
  if (!result.float_eval.failed.empty()) m += QString(", %1 unreadable").arg(result.float_eval.failed.size());
  metrics_->setText(m + ")");
  // The threshold cannot go below the lowest score the engine kept.
  threshold_->setMinimum(std::clamp(static_cast<int>(std::ceil(result.min_score * 100 - 1e-9)), 0, 100));
  showControlsFor(task_);
  strip_->clear();
  strip_->setToolTip(task_ == TaskKind::Detection ? "Largest change first (lost + new boxes + 1 − IoU of matched ones)"
                     : task_ == TaskKind::Segmentation ? "Largest change first (fraction of pixels whose class changed)"
                                                       : "Largest output change first (KL of the softmax outputs)");
  // Thumbnails for the most changed images only: a 50k-image set must not stall the UI.
  const int shown = std::min<int>(static_cast<int>(result.images.size()), 200);
  for (int i = 0; i < shown; ++i) {
    const ImageComparison& c = result.images[i];
    auto* item =
        new QListWidgetItem(QIcon(QPixmap::fromImage(stripThumbnail(c, task_, 56))), changeText(c, task_), strip_);
    QString tip = QString::fromStdString(c.path) + "\n";
    if (task_ == TaskKind::Detection)
      tip += QString("at the default threshold: %1 matched, %2 lost, %3 new; change %4")
                 .arg(c.matched)
                 .arg(c.lost)
                 .arg(c.added)
                 .arg(c.change, 0, 'g', 3);
    else if (task_ == TaskKind::Segmentation)
      tip += QString("%1% of the pixels changed class").arg(100 * changedFraction(c), 0, 'f', 2);
    else
      tip += QString("KL %1, max |Δp| %2").arg(c.kl, 0, 'g', 3).arg(c.max_prob_change, 0, 'f', 3);
    item->setToolTip(tip);
  }
  settingResult_ = true;
  if (shown > 0) strip_->setCurrentRow(0);
  settingResult_ = false;
}

void CompareView::showImage(const ImageComparison& image, const std::vector<ClassScore>* compressedAll) {
  const QString path = QString::fromStdString(image.path);
  const TaskKind task = taskOfImage(image, task_);
  canvas_->setClassNamer(className_);
  canvas_->setImage(image, task);
  showControlsFor(task);
  QString caption = QFileInfo(path).fileName().toHtmlEscaped();
  if (task == TaskKind::Classification) {
    if (image.label >= 0) {
      QString name = className_ ? className_(image.label) : QString("class %1").arg(image.label);
      for (const auto* list : {&image.float_top, &image.compressed_top})
        for (const ClassScore& c : *list)
          if (c.class_index == image.label && !c.label.empty()) name = QString::fromStdString(c.label);
      caption += QString(" — true class: <b>%1</b>").arg(name.toHtmlEscaped());
    }
    caption += QString(" — KL %1, max |Δp| %2").arg(image.kl, 0, 'g', 3).arg(image.max_prob_change, 0, 'f', 3);
    fillClassificationTable(image, compressedAll);
  } else if (task == TaskKind::Detection) {
    caption += QString(" — at the default threshold %1 matched, <b>%2 lost, %3 new</b> (change %4)")
                   .arg(image.matched)
                   .arg(image.lost)
                   .arg(image.added)
                   .arg(image.change, 0, 'g', 3);
    fillDetectionTable();
  } else {
    caption += QString(" — <b>%1%</b> of the pixels changed class").arg(100 * changedFraction(image), 0, 'f', 2);
    fillSegmentationTable(image);
  }
  caption_->setTextFormat(Qt::RichText);
  caption_->setText(caption);
}

void CompareView::fillClassificationTable(const ImageComparison& image, const std::vector<ClassScore>* compressedAll) {
  table_->clearContents();
  table_->setColumnCount(5);
  table_->setRowCount(5);
  table_->setHorizontalHeaderLabels({"Float class", "p", "Compressed class", "p", "Δp (float's class)"});
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

void CompareView::fillDetectionTable() {
  // The boxes the canvas shows at the current threshold: each float box with its match (or lost), then the new ones.
  const TaskCanvas::Boxes& b = canvas_->boxes();
  auto name = [this](const lorq::Detection& d) {
    return d.label.empty() ? (className_ ? className_(d.class_index) : QString("class %1").arg(d.class_index))
                           : QString::fromStdString(d.label);
  };
  std::vector<size_t> order(b.floatDets.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t i, size_t j) { return b.floatDets[i].score > b.floatDets[j].score; });
  int newBoxes = 0;
  for (BoxFate f : b.compressedFate) newBoxes += f == BoxFate::New;
  table_->clearContents();
  table_->setColumnCount(5);
  table_->setRowCount(static_cast<int>(order.size()) + newBoxes);
  table_->setHorizontalHeaderLabels({"Float box", "score", "Compressed box", "score", "IoU / fate"});
  int r = 0;
  for (size_t i : order) {
    const lorq::Detection& f = b.floatDets[i];
    table_->setItem(r, 0, item(name(f)));
    table_->setItem(r, 1, item(QString::number(f.score, 'f', 3)));
    const int j = b.floatMatch[i];
    if (j >= 0) {
      const lorq::Detection& c = b.compressedDets[j];
      table_->setItem(r, 2, item(name(c)));
      const double d = c.score - f.score;
      table_->setItem(r, 3,
                      item(QString("%1 (%2%3)").arg(c.score, 0, 'f', 3).arg(d >= 0 ? "+" : "").arg(d, 0, 'f', 3)));
      table_->setItem(
          r, 4,
          item(QString("IoU %1").arg(boxIou(f, c), 0, 'f', 3), TaskCanvas::fateColor(BoxFate::Matched).darker(130)));
    } else {
      table_->setItem(r, 4, item("lost", TaskCanvas::fateColor(BoxFate::Lost).darker(130)));
    }
    ++r;
  }
  for (size_t j = 0; j < b.compressedDets.size(); ++j)
    if (b.compressedFate[j] == BoxFate::New) {
      table_->setItem(r, 2, item(name(b.compressedDets[j])));
      table_->setItem(r, 3, item(QString::number(b.compressedDets[j].score, 'f', 3)));
      table_->setItem(r, 4, item("new", TaskCanvas::fateColor(BoxFate::New).darker(130)));
      ++r;
    }
}

void CompareView::fillSegmentationTable(const ImageComparison& image) {
  // Per class: its colour (the legend), its share of the pixels under each model, and the change.
  std::map<int, double> floatShare, compressedShare;
  for (auto [map, share] :
       {std::pair{&image.float_map, &floatShare}, std::pair{&image.compressed_map, &compressedShare}})
    if (!map->classes.empty()) {
      for (uint8_t c : map->classes) (*share)[c] += 1;
      for (auto& [c, n] : *share) n *= 100.0 / map->classes.size();
    }
  std::map<int, double> all;
  for (const auto& [c, n] : floatShare) all[c] = std::max(all[c], n);
  for (const auto& [c, n] : compressedShare) all[c] = std::max(all[c], n);
  std::vector<int> classes;
  for (const auto& [c, n] : all) classes.push_back(c);
  std::stable_sort(classes.begin(), classes.end(), [&](int a, int b) { return all[a] > all[b]; });
  table_->clearContents();
  table_->setColumnCount(4);
  table_->setRowCount(static_cast<int>(classes.size()));
  table_->setHorizontalHeaderLabels({"Class", "float %", "compressed %", "Δ points"});
  for (int r = 0; r < static_cast<int>(classes.size()); ++r) {
    const int c = classes[r];
    auto* name = item(className_ ? className_(c) : QString("class %1").arg(c));
    name->setData(Qt::DecorationRole, classColor(c));  // the legend's swatch
    table_->setItem(r, 0, name);
    const double f = floatShare.count(c) ? floatShare[c] : 0, q = compressedShare.count(c) ? compressedShare[c] : 0;
    table_->setItem(r, 1, item(QString("%1%").arg(f, 0, 'f', 2)));
    table_->setItem(r, 2, item(QString("%1%").arg(q, 0, 'f', 2)));
    table_->setItem(r, 3,
                    item(QString("%1%2").arg(q - f >= 0 ? "+" : "").arg(q - f, 0, 'f', 2),
                         q - f >= 0 ? QColor(0, 120, 0) : QColor(180, 0, 0)));
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
  canvas_->clearImage();
  caption_->clear();
  table_->clearContents();
  controls_->hide();
}
