#include "task_canvas.h"

#include "lorq/tasks/detection_match.h"

#include <QImageReader>
#include <QPainter>
#include <QPen>
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

using lorq::Detection;
using lorq::LabelMap;
using lorq::api::ImageComparison;
using lorq::api::TaskKind;

QColor classColor(int c) {
  // Kept identical to lorq::class_color (core/src/tasks/predict.cpp) so the workbench and `lorq predict --draw`
  // paint a class the same colour; the UI cannot call it (LibTorch stays out of ui/).
  if (c <= 0) return QColor(60, 60, 60);
  static const int base[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230}};
  if (c <= 8) return QColor(base[c - 1][0], base[c - 1][1], base[c - 1][2]);
  const double h = std::fmod(c * 0.618033988749895, 1.0) * 6.0;
  const int i = static_cast<int>(h);
  const double f = h - i;
  const uint8_t v = 230, p = 60, q = static_cast<uint8_t>(230 - 170 * f), t = static_cast<uint8_t>(60 + 170 * f);
  switch (i % 6) {
    case 0:
      return QColor(v, t, p);
    case 1:
      return QColor(q, v, p);
    case 2:
      return QColor(p, v, t);
    case 3:
      return QColor(p, q, v);
    case 4:
      return QColor(t, p, v);
    default:
      return QColor(v, p, q);
  }
}

double boxIou(const Detection& a, const Detection& b) { return lorq::box_iou(a, b); }

std::vector<int> matchDetections(const std::vector<Detection>& a, const std::vector<Detection>& b, double minIou) {
  return lorq::match_detections(a, b, minIou);
}

std::vector<Detection> detectionsAbove(const std::vector<Detection>& dets, double threshold) {
  std::vector<Detection> out;
  for (const Detection& d : dets)
    if (d.score >= threshold) out.push_back(d);
  return out;
}

double changedPixelFraction(const LabelMap& a, const LabelMap& b) {
  if (a.empty() || a.width != b.width || a.height != b.height || a.classes.size() != b.classes.size()) return 0;
  size_t changed = 0;
  for (size_t i = 0; i < a.classes.size(); ++i) changed += a.classes[i] != b.classes[i];
  return static_cast<double>(changed) / a.classes.size();
}

namespace {
constexpr int kMargin = 4, kGap = 8, kPen = 2, kLegendRows = 3, kLineSample = 28;

QImage colourMap(const LabelMap& m) {
  QImage out(m.width, m.height, QImage::Format_ARGB32);
  QRgb lut[256];
  for (int c = 0; c < 256; ++c) lut[c] = classColor(c).rgba();
  for (int y = 0; y < m.height; ++y) {
    auto* row = reinterpret_cast<QRgb*>(out.scanLine(y));
    const uint8_t* in = m.classes.data() + static_cast<size_t>(y) * m.width;
    for (int x = 0; x < m.width; ++x) row[x] = lut[in[x]];
  }
  return out;
}

bool validMap(const LabelMap& m) {
  return !m.empty() && m.width > 0 && m.height > 0 && m.classes.size() == static_cast<size_t>(m.width) * m.height;
}

QColor textOn(const QColor& background) { return qGray(background.rgb()) > 150 ? Qt::black : Qt::white; }
}  // namespace

QColor TaskCanvas::fateColor(BoxFate fate) {
  switch (fate) {
    case BoxFate::Matched:
      return QColor(40, 200, 40);
    case BoxFate::Lost:
      return QColor(255, 140, 0);
    default:
      return QColor(0, 160, 255);
  }
}

Qt::PenStyle TaskCanvas::fateStyle(BoxFate fate) {
  switch (fate) {
    case BoxFate::Matched:
      return Qt::SolidLine;
    case BoxFate::Lost:
      return Qt::DashLine;
    default:
      return Qt::DotLine;
  }
}

TaskCanvas::TaskCanvas(QWidget* parent) : QWidget(parent) {
  setAttribute(Qt::WA_OpaquePaintEvent);
  setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

bool TaskCanvas::setImage(const ImageComparison& image, TaskKind task) {
  task_ = task;
  const QString path = QString::fromStdString(image.path);
  QImageReader reader(path);
  reader.setAutoTransform(true);  // as the engine's decoder, which applies the EXIF orientation too
  image_ = reader.read().convertToFormat(QImage::Format_RGB32);
  message_ = image_.isNull() ? QString("cannot display %1: %2").arg(path, reader.errorString()) : QString();
  floatAll_ = image.float_detections;
  compressedAll_ = image.compressed_detections;
  floatMask_ = compressedMask_ = changedMask_ = dimmed_ = QImage();
  classesShown_.clear();
  changed_ = 0;
  if (task == TaskKind::Segmentation && !image_.isNull()) {
    const LabelMap &a = image.float_map, &b = image.compressed_map;
    if (validMap(a)) floatMask_ = colourMap(a);
    if (validMap(b)) compressedMask_ = colourMap(b);
    std::map<int, size_t> pixels;
    for (const LabelMap* m : {&a, &b})
      if (validMap(*m))
        for (uint8_t c : m->classes) ++pixels[c];
    classesShown_.clear();
    for (const auto& [c, n] : pixels) classesShown_.push_back(c);
    std::stable_sort(classesShown_.begin(), classesShown_.end(), [&](int x, int y) { return pixels[x] > pixels[y]; });
    if (validMap(a) && validMap(b) && a.width == b.width && a.height == b.height) {
      changedMask_ = QImage(a.width, a.height, QImage::Format_ARGB32);
      changedMask_.fill(Qt::transparent);
      const QRgb red = disagreementColor().rgba();
      size_t changed = 0;
      for (int y = 0; y < a.height; ++y) {
        auto* row = reinterpret_cast<QRgb*>(changedMask_.scanLine(y));
        for (int x = 0; x < a.width; ++x)
          if (a.at(x, y) != b.at(x, y)) {
            row[x] = red;
            ++changed;
          }
      }
      changed_ = static_cast<double>(changed) / a.classes.size();
    } else if (validMap(a) && validMap(b)) {
      message_ = QString("the float map is %1x%2, the compressed one %3x%4: no disagreement map")
                     .arg(a.width)
                     .arg(a.height)
                     .arg(b.width)
                     .arg(b.height);
    }
    // The image in dark grey, so the changed pixels stand out whatever the image's colours.
    dimmed_ = image_.convertToFormat(QImage::Format_Grayscale8).convertToFormat(QImage::Format_RGB32);
    for (int y = 0; y < dimmed_.height(); ++y) {
      auto* row = reinterpret_cast<QRgb*>(dimmed_.scanLine(y));
      for (int x = 0; x < dimmed_.width(); ++x) {
        const int g = 20 + qGray(row[x]) * 2 / 5;
        row[x] = qRgb(g, g, g);
      }
    }
  }
  updateBoxes();
  update();
  return !image_.isNull();
}

void TaskCanvas::clearImage() {
  image_ = floatMask_ = compressedMask_ = changedMask_ = dimmed_ = QImage();
  floatAll_.clear();
  compressedAll_.clear();
  classesShown_.clear();
  message_.clear();
  updateBoxes();
  update();
}

void TaskCanvas::setMode(Mode mode) {
  mode_ = mode;
  update();
}

void TaskCanvas::setScoreThreshold(double threshold) {
  threshold_ = threshold;
  updateBoxes();
  update();
}

void TaskCanvas::setOpacity(double opacity) {
  opacity_ = std::clamp(opacity, 0.0, 1.0);
  update();
}

void TaskCanvas::updateBoxes() {
  Boxes b;
  b.floatDets = detectionsAbove(floatAll_, threshold_);
  b.compressedDets = detectionsAbove(compressedAll_, threshold_);
  b.floatMatch = matchDetections(b.floatDets, b.compressedDets);
  b.floatFate.assign(b.floatDets.size(), BoxFate::Lost);
  b.compressedFate.assign(b.compressedDets.size(), BoxFate::New);
  for (size_t i = 0; i < b.floatMatch.size(); ++i)
    if (b.floatMatch[i] >= 0) {
      b.floatFate[i] = BoxFate::Matched;
      b.compressedFate[b.floatMatch[i]] = BoxFate::Matched;
    }
  boxes_ = std::move(b);
}

TaskCanvas::Layout TaskCanvas::layoutFor(const QSize& size) const {
  Layout l;
  if (image_.isNull()) return l;
  const bool annotated = task_ != TaskKind::Classification;
  const int titleH = annotated ? fontMetrics().height() + 4 : 0;
  const int legendH = legendHeight(size.width() - 2 * kMargin);
  int n = 1;
  if (mode_ == Mode::SideBySide) n = task_ == TaskKind::Detection ? 2 : task_ == TaskKind::Segmentation ? 3 : 1;
  const double availW = size.width() - 2 * kMargin - (n - 1) * kGap;
  const double availH = size.height() - 2 * kMargin - titleH - legendH;
  l.scale = std::max(1e-3, std::min(availW / (n * image_.width()), availH / image_.height()));
  const int pw = std::max(1, static_cast<int>(std::lround(image_.width() * l.scale)));
  const int ph = std::max(1, static_cast<int>(std::lround(image_.height() * l.scale)));
  const int left = kMargin + std::max(0, static_cast<int>((availW - n * pw) / 2));
  const int top = kMargin + titleH + std::max(0, static_cast<int>((availH - ph) / 2));
  for (int i = 0; i < n; ++i) l.panels.emplace_back(left + i * (pw + kGap), top, pw, ph);
  if (legendH > 0) l.legend = QRect(kMargin, top + ph + 4, size.width() - 2 * kMargin, legendH - 4);
  const QString at = QString(", score ≥ %1").arg(threshold_, 0, 'f', 2);
  if (task_ == TaskKind::Detection)
    l.titles = n == 2 ? std::vector<QString>{"Float" + at, "Compressed" + at}
                      : std::vector<QString>{"Float and compressed, overlaid" + at};
  else if (task_ == TaskKind::Segmentation)
    l.titles = n == 3 ? std::vector<QString>{"Float", "Compressed",
                                             QString("Changed pixels (%1%)").arg(100 * changed_, 0, 'f', 2)}
                      : std::vector<QString>{"Compressed, changed pixels in red"};
  return l;
}

QSize TaskCanvas::nativeSize() const {
  if (image_.isNull()) return {200, 100};
  const bool annotated = task_ != TaskKind::Classification;
  int n = 1;
  if (mode_ == Mode::SideBySide) n = task_ == TaskKind::Detection ? 2 : task_ == TaskKind::Segmentation ? 3 : 1;
  const int titleH = annotated ? fontMetrics().height() + 4 : 0;
  const int width = n * image_.width() + (n - 1) * kGap + 2 * kMargin;
  return {width, image_.height() + titleH + legendHeight(width - 2 * kMargin) + 2 * kMargin};
}

QImage TaskCanvas::renderImage(QSize size) const {
  if (size.isEmpty()) size = nativeSize();
  QImage out(size, QImage::Format_RGB32);
  QPainter p(&out);
  p.setFont(font());
  paint(p, size);
  return out;
}

void TaskCanvas::paintEvent(QPaintEvent*) {
  QPainter p(this);
  paint(p, size());
}

const QImage& TaskCanvas::scaled(const QImage& source, const QSize& size, Qt::TransformationMode mode, int slot) const {
  if (source.size() == size) return source;
  ScaledCache& c = cache_[slot];
  if (c.source != &source || c.key != source.cacheKey() || c.size != size) {
    c.source = &source;
    c.key = source.cacheKey();
    c.size = size;
    c.image = source.scaled(size, Qt::IgnoreAspectRatio, mode);
  }
  return c.image;
}

void TaskCanvas::paint(QPainter& p, const QSize& size) const {
  p.fillRect(QRect(QPoint(0, 0), size), palette().color(QPalette::Window));
  if (image_.isNull()) {
    p.setPen(palette().color(QPalette::WindowText));
    p.drawText(QRect(QPoint(0, 0), size), Qt::AlignCenter | Qt::TextWordWrap, message_);
    return;
  }
  const Layout l = layoutFor(size);
  const QSize ps = l.panels.front().size();
  const QImage& img = scaled(image_, ps, Qt::SmoothTransformation, 0);
  p.setPen(palette().color(QPalette::WindowText));
  for (size_t i = 0; i < l.titles.size() && i < l.panels.size(); ++i) {
    const QRect r = l.panels[i];
    p.drawText(QRect(r.left(), r.top() - fontMetrics().height() - 3, r.width(), fontMetrics().height()),
               Qt::AlignLeft | Qt::AlignBottom, fontMetrics().elidedText(l.titles[i], Qt::ElideRight, r.width()));
  }
  for (size_t i = 0; i < l.panels.size(); ++i) {
    const QRect& r = l.panels[i];
    p.save();
    p.setClipRect(r);
    if (task_ == TaskKind::Segmentation) {
      const bool changedPanel = i == 2;
      // Class colours are nearest-neighbour scaled: a pixel's class is never blended with its neighbour's.
      const QImage& mask = i == 0 && l.panels.size() == 3 ? floatMask_ : compressedMask_;
      if (changedPanel) {
        p.drawImage(r.topLeft(), scaled(dimmed_, ps, Qt::SmoothTransformation, 4));
      } else {
        p.drawImage(r.topLeft(), img);
        if (!mask.isNull() && opacity_ > 0) {
          p.setOpacity(opacity_);
          p.drawImage(
              r, mask.size() == ps ? mask : scaled(mask, ps, Qt::FastTransformation, &mask == &floatMask_ ? 1 : 2));
          p.setOpacity(1);
        }
      }
      if ((changedPanel || l.panels.size() == 1) && !changedMask_.isNull())
        p.drawImage(r, scaled(changedMask_, ps, Qt::FastTransformation, 3));
    } else {
      p.drawImage(r.topLeft(), img);
      if (task_ == TaskKind::Detection) paintDetections(p, r, l.scale, l.panels.size() == 1 ? 2 : static_cast<int>(i));
    }
    p.restore();
  }
  if (!l.legend.isEmpty()) paintLegend(p, l.legend);
}

QString TaskCanvas::nameOfClass(int index) const {
  return className_ ? className_(index) : QString("class %1").arg(index);
}

QString TaskCanvas::nameOf(const Detection& d) const {
  return d.label.empty() ? nameOfClass(d.class_index) : QString::fromStdString(d.label);
}

void TaskCanvas::paintDetections(QPainter& p, const QRect& panel, double scale, int which) const {
  const QFontMetrics fm = p.fontMetrics();
  // Float tags above the box, compressed tags below it, so an overlaid matched pair keeps both readable.
  auto draw = [&](const Detection& d, BoxFate fate, bool below) {
    const QRect box(QPoint(panel.left() + static_cast<int>(std::lround(d.x0 * scale)),
                           panel.top() + static_cast<int>(std::lround(d.y0 * scale))),
                    QPoint(panel.left() + static_cast<int>(std::lround(d.x1 * scale)),
                           panel.top() + static_cast<int>(std::lround(d.y1 * scale))));
    const QColor colour = fateColor(fate);
    p.setRenderHint(QPainter::Antialiasing, false);  // exact fate colours on the edges
    p.setBrush(Qt::NoBrush);
    p.setPen(QPen(colour, kPen, fateStyle(fate), Qt::FlatCap, Qt::MiterJoin));
    p.drawRect(box);
    const QString text = QString("%1 %2").arg(nameOf(d)).arg(d.score, 0, 'f', 2);
    const QSize ts(fm.horizontalAdvance(text) + 6, fm.height() + 2);
    int y = below ? box.bottom() + kPen : box.top() - kPen - ts.height();
    if (y < panel.top()) y = box.top() + kPen;
    if (y + ts.height() > panel.bottom()) y = box.bottom() - kPen - ts.height();
    const QRect tag(QPoint(box.left(), y), ts);
    p.fillRect(tag, colour);
    p.setPen(textOn(colour));
    p.drawText(tag, Qt::AlignCenter, text);
  };
  if (which == 0 || which == 2)
    for (size_t i = 0; i < boxes_.floatDets.size(); ++i) draw(boxes_.floatDets[i], boxes_.floatFate[i], false);
  if (which == 1 || which == 2)
    for (size_t i = 0; i < boxes_.compressedDets.size(); ++i)
      draw(boxes_.compressedDets[i], boxes_.compressedFate[i], true);
}

std::vector<TaskCanvas::LegendItem> TaskCanvas::legendItems() const {
  std::vector<LegendItem> items;
  if (task_ == TaskKind::Detection) {
    for (const auto& [fate, text] : {std::pair{BoxFate::Matched, QString("matched (same class, IoU ≥ 0.5)")},
                                     std::pair{BoxFate::Lost, QString("lost (float only)")},
                                     std::pair{BoxFate::New, QString("new (compressed only)")}})
      items.push_back({true, fateColor(fate), fateStyle(fate), text});
  } else if (task_ == TaskKind::Segmentation) {
    items.push_back({false, disagreementColor(), Qt::SolidLine, "changed"});
    for (int c : classesShown_) items.push_back({false, classColor(c), Qt::SolidLine, nameOfClass(c)});
  }
  if (!message_.isEmpty() && !image_.isNull()) items.push_back({false, QColor(), Qt::SolidLine, message_});
  return items;
}

std::vector<QPoint> TaskCanvas::legendPlaces(const std::vector<LegendItem>& items, int width, int* rows,
                                             int* more) const {
  const QFontMetrics fm = fontMetrics();
  const int swatch = fm.height() - 4, moreW = fm.horizontalAdvance("+999 more");
  std::vector<QPoint> places;
  int x = 0, row = 0;
  *more = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const int sample = items[i].colour.isValid() ? (items[i].line ? kLineSample : swatch) + 6 : 0;
    const int w = sample + fm.horizontalAdvance(items[i].text) + 12;
    if (x > 0 && x + w > width) {
      ++row;
      x = 0;
    }
    // The last row keeps room to say how many classes did not fit.
    if (row >= kLegendRows || (row == kLegendRows - 1 && x + w > width - moreW && i + 1 < items.size())) {
      *more = static_cast<int>(items.size() - i);
      row = std::min(row, kLegendRows - 1);
      break;
    }
    places.emplace_back(x, row);
    x += w;
  }
  *rows = items.empty() ? 0 : row + 1;
  return places;
}

int TaskCanvas::legendHeight(int width) const {
  if (image_.isNull() || task_ == TaskKind::Classification) return 0;
  int rows = 0, more = 0;
  legendPlaces(legendItems(), width, &rows, &more);
  return rows * (fontMetrics().height() + 2) + 8;
}

void TaskCanvas::paintLegend(QPainter& p, const QRect& rect) const {
  const QFontMetrics fm = fontMetrics();
  const std::vector<LegendItem> items = legendItems();
  int rows = 0, more = 0;
  const std::vector<QPoint> places = legendPlaces(items, rect.width(), &rows, &more);
  const int rowH = fm.height() + 2, swatch = fm.height() - 4;
  p.setRenderHint(QPainter::Antialiasing, false);
  int endX = 0, endRow = 0;
  for (size_t i = 0; i < places.size(); ++i) {
    const LegendItem& item = items[i];
    int x = rect.left() + places[i].x();
    const int top = rect.top() + places[i].y() * rowH, cy = top + rowH / 2;
    if (item.colour.isValid() && item.line) {
      p.setPen(QPen(item.colour, kPen, item.style, Qt::FlatCap));
      p.drawLine(x, cy, x + kLineSample, cy);
      x += kLineSample + 6;
    } else if (item.colour.isValid()) {
      p.fillRect(QRect(x, cy - swatch / 2, swatch, swatch), item.colour);
      x += swatch + 6;
    }
    // A legend item without a colour is a problem with the image (maps of another size): in red.
    p.setPen(item.colour.isValid() ? palette().color(QPalette::WindowText) : QColor(200, 0, 0));
    p.drawText(QRect(x, top, rect.right() - x, rowH), Qt::AlignLeft | Qt::AlignVCenter, item.text);
    endX = x + fm.horizontalAdvance(item.text) + 12;
    endRow = places[i].y();
  }
  if (more > 0) {
    p.setPen(palette().color(QPalette::WindowText));
    p.drawText(QRect(endX, rect.top() + endRow * rowH, rect.right() - endX, rowH), Qt::AlignLeft | Qt::AlignVCenter,
               QString("+%1 more").arg(more));
  }
}
