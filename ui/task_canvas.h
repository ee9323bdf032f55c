#pragma once
// The compare view's image canvas for every task: the image alone (classification), the image with the float and
// the compressed model's boxes (detection) or label maps (segmentation), side by side or overlaid. Panel titles and
// the legend sit in bands above and below the image panels, never over the image. The image is decoded once per
// image and scaled once per size; slider moves (score threshold, mask opacity) only repaint from those caches.
#include <QImage>
#include <QPixmap>
#include <QWidget>
#include <functional>
#include <vector>

#include "lorq/session/api.h"

// The engine's class colour (lorq/tasks/predict.h class_color, what `lorq predict --draw` paints): index 0 dark
// grey, then eight well-separated colours, then a golden-ratio walk around the hue circle. Detections use
// class_index + 1 (their classes have no background).
QColor classColor(int classIndex);

// What became of a detection between the two models.
enum class BoxFate { Matched, Lost, New };

// Greedy matching as the engine's match_detections (lorq/tasks/detection.h): float detections by descending score,
// each takes the not yet taken compressed detection of its class with the largest IoU >= minIou. For each float
// detection, the index of its compressed match or -1.
std::vector<int> matchDetections(const std::vector<lorq::Detection>& floatDets,
                                 const std::vector<lorq::Detection>& compressedDets, double minIou = 0.5);
double boxIou(const lorq::Detection& a, const lorq::Detection& b);
// The detections scoring at least `threshold`, in their order.
std::vector<lorq::Detection> detectionsAbove(const std::vector<lorq::Detection>& dets, double threshold);
// Fraction of pixels whose class differs (0 when the maps are empty or of different sizes).
double changedPixelFraction(const lorq::LabelMap& a, const lorq::LabelMap& b);

class TaskCanvas : public QWidget {
  Q_OBJECT
 public:
  enum class Mode { SideBySide, Overlay };
  // The fates' colours and pen styles (the legend draws the same).
  static QColor fateColor(BoxFate fate);
  static Qt::PenStyle fateStyle(BoxFate fate);
  // Changed pixels in the disagreement map.
  static QColor disagreementColor() { return QColor(255, 0, 0); }

  explicit TaskCanvas(QWidget* parent = nullptr);

  // Shows one image of a comparison with the task's overlays; returns false when the image cannot be decoded
  // (the canvas then says so).
  bool setImage(const lorq::api::ImageComparison& image, lorq::api::TaskKind task);
  void clearImage();
  void setMode(Mode mode);
  void setScoreThreshold(double threshold);  // detection: boxes scoring below it are hidden (both models)
  void setOpacity(double opacity);           // segmentation: class colours over the image, 0..1
  void setClassNamer(std::function<QString(int)> namer) { className_ = std::move(namer); }
  Mode mode() const { return mode_; }
  double scoreThreshold() const { return threshold_; }
  double opacity() const { return opacity_; }
  lorq::api::TaskKind task() const { return task_; }
  bool hasImage() const { return !image_.isNull(); }
  QSize imageSize() const { return image_.size(); }

  // The detections drawn at the current threshold, and what became of each (float: matched or lost; compressed:
  // matched or new).
  struct Boxes {
    std::vector<lorq::Detection> floatDets, compressedDets;
    std::vector<BoxFate> floatFate, compressedFate;
    std::vector<int> floatMatch;  // index into compressedDets or -1
  };
  const Boxes& boxes() const { return boxes_; }

  // Where things go on a canvas of `size`: the panels' rectangles (the image fitted into each, same scale).
  struct Layout {
    double scale = 1;
    std::vector<QRect> panels;  // classification: 1; detection: 2 side by side / 1 overlaid; segmentation: 3 / 1
    std::vector<QString> titles;
    QRect legend;
  };
  Layout layoutFor(const QSize& size) const;
  // The canvas size at which the image is drawn at its own resolution (scale 1: each image pixel is one pixel).
  QSize nativeSize() const;
  // The whole canvas (titles, panels, legend) into an image of `size` (nativeSize() when empty): the export report
  // and the tests draw exactly what the widget shows.
  QImage renderImage(QSize size = {}) const;

  QSize sizeHint() const override { return {420, 300}; }
  QSize minimumSizeHint() const override { return {80, 80}; }

 protected:
  void paintEvent(QPaintEvent* event) override;

 private:
  void paint(QPainter& p, const QSize& size) const;
  void paintDetections(QPainter& p, const QRect& panel, double scale, int which) const;  // 0 float, 1 compr., 2 both
  // The legend: line samples (detection fates) or colour swatches (classes), wrapped onto at most kLegendRows rows.
  struct LegendItem {
    bool line = false;
    QColor colour;
    Qt::PenStyle style = Qt::SolidLine;
    QString text;
  };
  std::vector<LegendItem> legendItems() const;
  // Each item's place (x, row) within `width`; the items that do not fit are counted in *more.
  std::vector<QPoint> legendPlaces(const std::vector<LegendItem>& items, int width, int* rows, int* more) const;
  int legendHeight(int width) const;
  void paintLegend(QPainter& p, const QRect& rect) const;
  void updateBoxes();
  const QImage& scaled(const QImage& source, const QSize& size, Qt::TransformationMode mode, int slot) const;
  QString nameOf(const lorq::Detection& d) const;
  QString nameOfClass(int index) const;

  lorq::api::TaskKind task_ = lorq::api::TaskKind::Classification;
  Mode mode_ = Mode::SideBySide;
  double threshold_ = 0.5, opacity_ = 0.5;
  QString message_;
  QImage image_;  // decoded once per image (RGB32)
  std::vector<lorq::Detection> floatAll_, compressedAll_;
  Boxes boxes_;
  // Segmentation layers at image size: each map's class colours, the changed pixels (transparent elsewhere), the
  // image dimmed to grey under them; the classes either map uses (the legend).
  QImage floatMask_, compressedMask_, changedMask_, dimmed_;
  std::vector<int> classesShown_;
  double changed_ = 0;
  std::function<QString(int)> className_;
  // Scaled copies per (layer, size): resizing rebuilds them, slider moves do not.
  struct ScaledCache {
    const QImage* source = nullptr;
    qint64 key = 0;
    QSize size;
    QImage image;
  };
  mutable ScaledCache cache_[5];
};
