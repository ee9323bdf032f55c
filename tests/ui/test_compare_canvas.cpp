// The compare view's canvas on the offscreen platform, fed hand-made comparisons (no model): detection boxes drawn
// by fate (matched / lost / new) with the score threshold re-matching the shown boxes, segmentation masks, opacity
// and the disagreement map, checked pixel by pixel on what the canvas renders at the image's own resolution; the
// compare view's per-task strip, metrics and controls; the export report's most changed images.
#include <QCheckBox>
#include <QDir>
#include <QFileInfo>
#include <QLabel>
#include <QListWidget>
#include <QSlider>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>
#include <functional>

#include "compare_view.h"
#include "export_report.h"
#include "task_canvas.h"

using namespace lorq::api;
using lorq::Detection;
using lorq::LabelMap;

namespace {
const QColor kGrey(128, 128, 128);

Detection det(int cls, float score, float x0, float y0, float x1, float y1) {
  Detection d;
  d.class_index = cls;
  d.score = score;
  d.label = "obj" + std::to_string(cls);
  d.x0 = x0;
  d.y0 = y0;
  d.x1 = x1;
  d.y1 = y1;
  return d;
}

// Counts the pixels of `colour` in a band `pad` pixels either side of a box's left edge, over the middle half of
// its height (away from the corners and the name tags above and below the box).
int leftEdgePixels(const QImage& img, const QRect& panel, const Detection& d, const QColor& colour, int pad = 2) {
  int n = 0;
  const int x = panel.left() + static_cast<int>(d.x0);
  const int h = static_cast<int>(d.y1 - d.y0);
  for (int y = panel.top() + static_cast<int>(d.y0) + h / 4; y <= panel.top() + static_cast<int>(d.y1) - h / 4; ++y)
    for (int dx = -pad; dx <= pad; ++dx) n += img.pixelColor(x + dx, y) == colour;
  return n;
}
int leftEdgeNot(const QImage& img, const QRect& panel, const Detection& d, const QColor& colour) {
  int n = 0;
  const int x = panel.left() + static_cast<int>(d.x0);
  const int h = static_cast<int>(d.y1 - d.y0);
  for (int y = panel.top() + static_cast<int>(d.y0) + h / 4; y <= panel.top() + static_cast<int>(d.y1) - h / 4; ++y)
    for (int dx = -2; dx <= 2; ++dx) n += img.pixelColor(x + dx, y) != colour;
  return n;
}
}  // namespace

class CompareCanvasTest : public QObject {
  Q_OBJECT
  QTemporaryDir tmp_;
  QString flatPng_, gradientPng_;
  // Detection scene: A float/compressed matched (class 0), B float only (class 1), C compressed only (class 2),
  // D a low-score compressed box (class 1, far from B).
  Detection A = det(0, 0.9f, 20, 20, 80, 70), A2 = det(0, 0.7f, 22, 22, 80, 72);
  Detection B = det(1, 0.8f, 110, 90, 180, 150);
  Detection C = det(2, 0.6f, 110, 20, 180, 70);
  Detection D = det(1, 0.3f, 30, 100, 90, 150);

  ImageComparison detectionImage() const {
    ImageComparison c;
    c.path = flatPng_.toStdString();
    c.width = 200;
    c.height = 160;
    c.float_detections = {A, B};
    c.compressed_detections = {A2, C, D};
    c.matched = 1;
    c.lost = 1;
    c.added = 1;
    c.change = 2.1;
    return c;
  }
  static LabelMap map(int w, int h, const std::function<int(int, int)>& cls) {
    LabelMap m;
    m.width = w;
    m.height = h;
    m.classes.resize(static_cast<size_t>(w) * h);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) m.classes[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>(cls(x, y));
    return m;
  }
  ImageComparison segmentationImage() const {
    ImageComparison c;
    c.path = gradientPng_.toStdString();
    c.width = 61;
    c.height = 37;
    c.float_map = map(61, 37, [](int x, int) { return x < 30 ? 0 : 1; });
    // A block turned into class 2, and a diagonal of class-1 pixels turned into class 12 (beyond the fixed colours).
    c.compressed_map = map(61, 37, [](int x, int y) {
      if (x >= 10 && x < 25 && y >= 8 && y < 20) return 2;
      if (x >= 30 && x - 30 == y) return 12;
      return x < 30 ? 0 : 1;
    });
    return c;
  }

 private slots:
  void initTestCase() {
    QVERIFY(tmp_.isValid());
    QImage flat(200, 160, QImage::Format_RGB32);
    flat.fill(kGrey);
    flatPng_ = QDir(tmp_.path()).filePath("flat.png");
    QVERIFY(flat.save(flatPng_));
    QImage gradient(61, 37, QImage::Format_RGB32);  // odd sizes, every pixel different
    for (int y = 0; y < gradient.height(); ++y)
      for (int x = 0; x < gradient.width(); ++x) gradient.setPixelColor(x, y, QColor(x * 4, y * 6, 90));
    gradientPng_ = QDir(tmp_.path()).filePath("gradient.png");
    QVERIFY(gradient.save(gradientPng_));
  }

  void classColoursAreTheEngines() {
    QCOMPARE(classColor(0), QColor(60, 60, 60));
    const int base[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                           {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230}};
    for (int c = 1; c <= 8; ++c) QCOMPARE(classColor(c), QColor(base[c - 1][0], base[c - 1][1], base[c - 1][2]));
    // The golden-ratio walk, worked by hand: 9 -> h = 3.3738 (sector 3), 10 -> h = 1.0820 (sector 1).
    QCOMPARE(classColor(9), QColor(60, 166, 230));
    QCOMPARE(classColor(10), QColor(216, 230, 60));
  }

  void matchingIsGreedyByScoreSameClassIouHalf() {
    QCOMPARE(boxIou(det(0, 1, 0, 0, 10, 10), det(0, 1, 5, 0, 15, 10)), 50.0 / 150.0);
    QCOMPARE(boxIou(det(0, 1, 0, 0, 10, 10), det(0, 1, 20, 20, 30, 30)), 0.0);
    // Same box, other class: no match; IoU just under and at 0.5.
    QCOMPARE(matchDetections({det(0, .9f, 0, 0, 10, 10)}, {det(1, .9f, 0, 0, 10, 10)}), std::vector<int>{-1});
    QCOMPARE(matchDetections({det(0, .9f, 0, 0, 10, 10)}, {det(0, .9f, 0, 0, 10, 4.9f)}), std::vector<int>{-1});
    QCOMPARE(matchDetections({det(0, .9f, 0, 0, 10, 10)}, {det(0, .9f, 0, 0, 10, 5)}), std::vector<int>{0});
    // Two float boxes want one compressed box: the higher-scoring float box (listed second) takes it.
    QCOMPARE(matchDetections({det(0, .6f, 0, 0, 10, 10), det(0, .9f, 1, 0, 11, 10)}, {det(0, .5f, 0, 0, 10, 10)}),
             (std::vector<int>{-1, 0}));
    // A float box takes the compressed box of largest IoU, whatever the compressed scores.
    QCOMPARE(matchDetections({det(0, .9f, 0, 0, 10, 10)}, {det(0, .99f, 2, 0, 12, 10), det(0, .1f, 0, 0, 10, 10)}),
             std::vector<int>{1});
    QCOMPARE(detectionsAbove({det(0, .4f, 0, 0, 1, 1), det(0, .5f, 0, 0, 1, 1)}, 0.5).size(), size_t(1));
  }

  void detectionBoxesAreDrawnByFate() {
    TaskCanvas canvas;
    canvas.setScoreThreshold(0.5);
    QVERIFY(canvas.setImage(detectionImage(), TaskKind::Detection));
    const QImage img = canvas.renderImage();
    const TaskCanvas::Layout l = canvas.layoutFor(img.size());
    QCOMPARE(l.scale, 1.0);
    QCOMPARE(static_cast<int>(l.panels.size()), 2);
    QVERIFY(l.panels[0].right() < l.panels[1].left());  // side by side
    const QRect fl = l.panels[0], co = l.panels[1];
    const QColor matched = TaskCanvas::fateColor(BoxFate::Matched), lost = TaskCanvas::fateColor(BoxFate::Lost),
                 added = TaskCanvas::fateColor(BoxFate::New);
    // Float panel: A matched, B lost; compressed panel: A2 matched, C new, D (0.3) hidden.
    QVERIFY(leftEdgePixels(img, fl, A, matched) > 10);
    QCOMPARE(leftEdgePixels(img, fl, A, lost) + leftEdgePixels(img, fl, A, added), 0);
    QVERIFY(leftEdgePixels(img, fl, B, lost) > 5);  // dashed: some of the edge
    QCOMPARE(leftEdgePixels(img, fl, B, matched) + leftEdgePixels(img, fl, B, added), 0);
    QVERIFY(leftEdgePixels(img, co, A2, matched) > 10);
    QVERIFY(leftEdgePixels(img, co, C, added) > 3);  // dotted
    QCOMPARE(leftEdgePixels(img, co, C, matched) + leftEdgePixels(img, co, C, lost), 0);
    QCOMPARE(leftEdgeNot(img, co, D, kGrey), 0);
    // Nothing of the float model in the compressed panel: B's place there is the image.
    QCOMPARE(leftEdgeNot(img, co, B, kGrey), 0);
    // The widget paints what renderImage() draws.
    canvas.resize(canvas.nativeSize());
    QCOMPARE(canvas.grab().toImage().convertToFormat(QImage::Format_RGB32), img.convertToFormat(QImage::Format_RGB32));
  }

  void thresholdHidesAndRematchesBoxes() {
    TaskCanvas canvas;
    canvas.setScoreThreshold(0.5);
    QVERIFY(canvas.setImage(detectionImage(), TaskKind::Detection));
    const QColor matched = TaskCanvas::fateColor(BoxFate::Matched), lost = TaskCanvas::fateColor(BoxFate::Lost),
                 added = TaskCanvas::fateColor(BoxFate::New);
    // Down to 0.2: D (class 1, nowhere near B) appears as a new box.
    canvas.setScoreThreshold(0.2);
    QImage img = canvas.renderImage();
    TaskCanvas::Layout l = canvas.layoutFor(img.size());
    QVERIFY(leftEdgePixels(img, l.panels[1], D, added) > 3);
    QCOMPARE(static_cast<int>(canvas.boxes().compressedDets.size()), 3);
    // Up to 0.75: A2 (0.7) and C (0.6) are hidden, their pixels are the image again, and A has lost its match.
    canvas.setScoreThreshold(0.75);
    img = canvas.renderImage();
    l = canvas.layoutFor(img.size());
    QCOMPARE(leftEdgeNot(img, l.panels[1], A2, kGrey), 0);
    QCOMPARE(leftEdgeNot(img, l.panels[1], C, kGrey), 0);
    QCOMPARE(leftEdgeNot(img, l.panels[1], D, kGrey), 0);
    QVERIFY(leftEdgePixels(img, l.panels[0], A, lost) > 5);
    QCOMPARE(leftEdgePixels(img, l.panels[0], A, matched), 0);
    // Overlaid: one panel with both models' boxes.
    canvas.setScoreThreshold(0.5);
    canvas.setMode(TaskCanvas::Mode::Overlay);
    img = canvas.renderImage();
    l = canvas.layoutFor(img.size());
    QCOMPARE(static_cast<int>(l.panels.size()), 1);
    QVERIFY(leftEdgePixels(img, l.panels[0], B, lost) > 5);
    QVERIFY(leftEdgePixels(img, l.panels[0], C, added) > 3);
    QVERIFY(leftEdgePixels(img, l.panels[0], A, matched) > 10);
  }

  void segmentationMasksOpacityAndDisagreement() {
    const ImageComparison image = segmentationImage();
    const QImage source(gradientPng_);
    TaskCanvas canvas;
    canvas.setOpacity(1);
    QVERIFY(canvas.setImage(image, TaskKind::Segmentation));
    QImage img = canvas.renderImage();
    TaskCanvas::Layout l = canvas.layoutFor(img.size());
    QCOMPARE(l.scale, 1.0);
    QCOMPARE(static_cast<int>(l.panels.size()), 3);
    int changed = 0;
    for (int y = 0; y < image.height; ++y)
      for (int x = 0; x < image.width; ++x) {
        const int f = image.float_map.at(x, y), c = image.compressed_map.at(x, y);
        // Opaque masks: each panel pixel is its class colour.
        QCOMPARE(img.pixelColor(l.panels[0].topLeft() + QPoint(x, y)), classColor(f));
        QCOMPARE(img.pixelColor(l.panels[1].topLeft() + QPoint(x, y)), classColor(c));
        // The disagreement map is red exactly where the classes differ.
        const bool red = img.pixelColor(l.panels[2].topLeft() + QPoint(x, y)) == TaskCanvas::disagreementColor();
        if (red != (f != c))
          QFAIL(qPrintable(
              QString("disagreement pixel %1,%2: red %3, classes %4/%5").arg(x).arg(y).arg(red).arg(f).arg(c)));
        changed += f != c;
      }
    QCOMPARE(changed, 15 * 12 + 31);
    // Opacity 0: the float and compressed panels are the image itself; the disagreement map does not change.
    canvas.setOpacity(0);
    const QImage clear = canvas.renderImage();
    for (int y = 0; y < image.height; ++y)
      for (int x = 0; x < image.width; ++x) {
        QCOMPARE(clear.pixelColor(l.panels[0].topLeft() + QPoint(x, y)), source.pixelColor(x, y));
        QCOMPARE(clear.pixelColor(l.panels[1].topLeft() + QPoint(x, y)), source.pixelColor(x, y));
        QCOMPARE(clear.pixelColor(l.panels[2].topLeft() + QPoint(x, y)),
                 img.pixelColor(l.panels[2].topLeft() + QPoint(x, y)));
      }
    // Half opacity blends: neither the image nor the class colour, between the two.
    canvas.setOpacity(0.5);
    const QImage half = canvas.renderImage();
    const QColor h = half.pixelColor(l.panels[0].topLeft() + QPoint(5, 5)), s = source.pixelColor(5, 5),
                 k = classColor(0);
    QVERIFY(std::abs(h.red() - (s.red() + k.red()) / 2) <= 2 && std::abs(h.green() - (s.green() + k.green()) / 2) <= 2);
    // Overlaid: one panel, the compressed mask with the changed pixels in red on top.
    canvas.setOpacity(0);
    canvas.setMode(TaskCanvas::Mode::Overlay);
    const QImage over = canvas.renderImage();
    l = canvas.layoutFor(over.size());
    QCOMPARE(static_cast<int>(l.panels.size()), 1);
    QCOMPARE(over.pixelColor(l.panels[0].topLeft() + QPoint(12, 10)), TaskCanvas::disagreementColor());
    QCOMPARE(over.pixelColor(l.panels[0].topLeft() + QPoint(5, 30)), source.pixelColor(5, 30));
  }

  void titlesAndLegendStayOffTheImage() {
    // Forty classes on a narrow image: the legend wraps onto at most three rows below the panels.
    ImageComparison image = segmentationImage();
    image.compressed_map = map(61, 37, [](int x, int y) { return (x + 61 * y) % 40; });
    TaskCanvas canvas;
    QVERIFY(canvas.setImage(image, TaskKind::Segmentation));
    for (const QSize& size : {canvas.nativeSize(), QSize(300, 200), QSize(1200, 300)}) {
      const TaskCanvas::Layout l = canvas.layoutFor(size);
      QCOMPARE(static_cast<int>(l.titles.size()), 3);
      for (const QRect& panel : l.panels) {
        QVERIFY(panel.top() >= canvas.fontMetrics().height());  // the title band above
        QVERIFY(l.legend.top() > panel.bottom());
        QVERIFY(QRect(QPoint(0, 0), size).contains(panel));
      }
      QVERIFY(l.legend.height() <= 3 * (canvas.fontMetrics().height() + 2) + 4);
      QVERIFY(l.legend.bottom() < size.height());
    }
  }

  void compareViewSwitchesByTask() {
    CompareView view;
    view.resize(900, 500);
    ComparisonResult det;
    det.float_eval.images = det.compressed_eval.images = 1;
    det.float_eval.labeled = det.compressed_eval.labeled = 1;
    det.float_eval.metrics = {{"mAP", 45.1, true}, {"mAP@.5", 61.0, true}};
    det.compressed_eval.metrics = {{"mAP", 40.25, true}, {"mAP@.5", 58.5, true}};
    det.images = {detectionImage()};
    view.setResult(det);
    QCOMPARE(view.task(), TaskKind::Detection);
    QVERIFY2(view.metricsLabel()->text().contains("Float: mAP <b>45.10%</b>, mAP@.5 61.00%"),
             qPrintable(view.metricsLabel()->text()));
    QVERIFY(view.metricsLabel()->text().contains("Compressed: mAP <b>40.25%</b>, mAP@.5 58.50%"));
    QCOMPARE(view.strip()->item(0)->text(), QString("−1 +1"));
    QCOMPARE(view.canvas()->task(), TaskKind::Detection);
    QVERIFY(!view.thresholdSlider()->isHidden() && view.opacitySlider()->isHidden());
    // The table lists A matched, B lost, C new at 0.5; the slider re-filters the canvas and the table.
    QCOMPARE(view.table()->rowCount(), 3);
    view.thresholdSlider()->setValue(20);
    QCOMPARE(view.canvas()->scoreThreshold(), 0.2);
    QCOMPARE(view.table()->rowCount(), 4);  // D is new now
    QCOMPARE(view.table()->item(3, 4)->text(), QString("new"));
    view.overlayToggle()->setChecked(true);
    QCOMPARE(view.canvas()->mode(), TaskCanvas::Mode::Overlay);

    ComparisonResult seg;
    seg.float_eval.images = 1;
    seg.images = {segmentationImage()};
    view.setResult(seg);
    QCOMPARE(view.task(), TaskKind::Segmentation);
    QCOMPARE(view.strip()->item(0)->text(), QString("%1% px").arg(100.0 * (15 * 12 + 31) / (61 * 37), 0, 'f', 1));
    QVERIFY(view.thresholdSlider()->isHidden() && !view.opacitySlider()->isHidden());
    QCOMPARE(view.table()->rowCount(), 4);  // classes 0, 1, 2, 12
    view.opacitySlider()->setValue(0);
    QCOMPARE(view.canvas()->opacity(), 0.0);

    // A classification result after both: the top-5 table and KL, no task controls.
    CompareView cls;
    ComparisonResult top;
    top.float_eval.images = top.float_eval.labeled = 1;
    top.float_eval.top1_pct = 75;
    top.float_eval.top5_pct = 90;
    ImageComparison c;
    c.path = flatPng_.toStdString();
    c.kl = 0.25;
    c.float_top = {{3, 0.6f, "cat"}};
    c.compressed_top = {{3, 0.5f, "cat"}};
    top.images = {c};
    cls.setResult(top);
    QCOMPARE(cls.task(), TaskKind::Classification);
    QCOMPARE(cls.strip()->item(0)->text(), QString("KL 0.25"));
    QVERIFY(cls.metricsLabel()->text().contains("Float: top-1 <b>75.00%</b>, top-5 90.00%"));
    QVERIFY(!cls.metricsLabel()->text().contains("same top-1"));  // no fidelity figures: none shown
    top.compressed_eval.has_fidelity = true;
    top.compressed_eval.agreement_pct = 87.5;
    top.compressed_eval.output_nsr = 0.0123;
    cls.setResult(top);
    QVERIFY2(cls.metricsLabel()->text().contains("same top-1 as float on 87.5%, output NSR 0.0123"),
             qPrintable(cls.metricsLabel()->text()));
    QCOMPARE(cls.table()->item(0, 4)->text(), QString("-0.100"));
  }

  void stripThumbnailsShowTheChange() {
    // Detection: the 200x160 image at 56 pixels wide (scale 0.28); B, lost, has its left edge near x = 31.
    const QImage det = CompareView::stripThumbnail(detectionImage(), TaskKind::Detection, 56);
    QCOMPARE(det.width(), 56);
    int lostPixels = 0;
    for (int x = 29; x <= 33; ++x) lostPixels += det.pixelColor(x, 33) == TaskCanvas::fateColor(BoxFate::Lost);
    QVERIFY(lostPixels > 0);
    QCOMPARE(det.pixelColor(5, 40), kGrey);  // no box there
    // Segmentation: red inside the changed block, the image elsewhere.
    const QImage seg = CompareView::stripThumbnail(segmentationImage(), TaskKind::Segmentation, 56);
    QCOMPARE(seg.width(), 56);
    QCOMPARE(seg.pixelColor(16, 12), TaskCanvas::disagreementColor());
    QVERIFY(seg.pixelColor(4, 28) != TaskCanvas::disagreementColor());
  }

  void exportDrawsTheMostChangedImages() {
    ComparisonResult det;
    det.images = {detectionImage(), detectionImage()};
    QCOMPARE(changedImageFiles(det), (QStringList{"changed-1.png", "changed-2.png"}));
    const QString dir = QDir(tmp_.path()).filePath("export");
    QVERIFY(QDir().mkpath(dir));
    QCOMPARE(writeChangedImages(dir, det), QString());
    const QImage png(QDir(dir).filePath("changed-1.png"));
    QVERIFY(!png.isNull());
    TaskCanvas reference;
    reference.setScoreThreshold(0.5);
    reference.setImage(det.images[0], TaskKind::Detection);
    QCOMPARE(png.size(), reference.nativeSize());
    const TaskCanvas::Layout l = reference.layoutFor(png.size());
    QVERIFY(leftEdgePixels(png, l.panels[0], B, TaskCanvas::fateColor(BoxFate::Lost)) > 5);
    QVERIFY(leftEdgePixels(png, l.panels[1], C, TaskCanvas::fateColor(BoxFate::New)) > 3);
    ComparisonResult cls;
    cls.images.resize(3);
    QVERIFY(changedImageFiles(cls).isEmpty());  // a classification's report has no such images
  }
};

QTEST_MAIN(CompareCanvasTest)
#include "test_compare_canvas.moc"
