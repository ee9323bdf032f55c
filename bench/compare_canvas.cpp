// bench_compare_canvas: whether the compare view stays responsive while a slider is dragged. A 1920x1080 image
// with 100 float and 100 compressed detections (and two 1920x1080 label maps): the time to show an image
// (decode, masks), and per slider step the work of one move: the score threshold (re-filter, re-match, the box
// table, one repaint of the canvas at 1000x600) and the mask opacity (one repaint). Target: well under 16 ms.
//
// Usage: bench_compare_canvas [--steps N]   (runs offscreen unless QT_QPA_PLATFORM is set)
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QPainter>
#include <QSlider>
#include <QTemporaryDir>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "compare_view.h"
#include "task_canvas.h"

using namespace lorq::api;

namespace {

lorq::LabelMap stripes(int w, int h, int period) {
  lorq::LabelMap m;
  m.width = w;
  m.height = h;
  m.classes.resize(static_cast<size_t>(w) * h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      m.classes[static_cast<size_t>(y) * w + x] = static_cast<uint8_t>((x / period + y / period) % 7);
  return m;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  int steps = 96;
  for (int i = 1; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--steps")) steps = std::max(1, std::atoi(argv[i + 1]));

  QTemporaryDir tmp;
  QImage image(1920, 1080, QImage::Format_RGB32);
  for (int y = 0; y < image.height(); ++y)
    for (int x = 0; x < image.width(); ++x) image.setPixel(x, y, qRgb(x % 256, y % 256, 90));
  const QString path = QDir(tmp.path()).filePath("scene.jpg");
  if (!image.save(path)) {
    std::fprintf(stderr, "%s: cannot write the test image\n", qPrintable(path));
    return 1;
  }
  ImageComparison det;
  det.path = path.toStdString();
  for (int i = 0; i < 100; ++i) {
    auto box = [&](float score, float dx, float dy) {
      lorq::Detection d;
      d.class_index = i % 6;
      d.score = score;
      d.x0 = (i * 37) % 1700 + dx;
      d.y0 = (i * 53) % 900 + dy;
      d.x1 = d.x0 + 150;
      d.y1 = d.y0 + 120;
      return d;
    };
    det.float_detections.push_back(box(0.05f + 0.0095f * i, 0, 0));
    det.compressed_detections.push_back(box(0.05f + 0.0093f * ((i * 7) % 100), 5, 3));
  }
  ImageComparison seg;
  seg.path = det.path;
  seg.float_map = stripes(1920, 1080, 100);
  seg.compressed_map = stripes(1920, 1080, 97);

  CompareView view;
  view.resize(1600, 700);
  view.show();
  QApplication::processEvents();
  TaskCanvas* canvas = view.canvas();
  QImage frame(canvas->size(), QImage::Format_RGB32);
  auto repaint = [&] {
    QPainter p(&frame);
    canvas->render(&p);  // what a paint event draws
  };
  auto timeShow = [&](const ImageComparison& c) {
    QElapsedTimer t;
    t.start();
    view.showImage(c);
    repaint();
    return t.nsecsElapsed() / 1e6;
  };
  std::printf("canvas %dx%d, image 1920x1080\n", canvas->width(), canvas->height());
  std::printf("show a detection image (decode, match, table, first paint): %.1f ms\n", timeShow(det));
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    QElapsedTimer t;
    t.start();
    view.thresholdSlider()->setValue(5 + (i * 95) / steps);  // re-filter, re-match, table
    repaint();
    ms.push_back(t.nsecsElapsed() / 1e6);
  }
  std::printf("threshold step (100 + 100 boxes): median %.2f ms, max %.2f ms over %d steps\n", median(ms),
              *std::max_element(ms.begin(), ms.end()), steps);
  std::printf("show a segmentation image (decode, colour maps, disagreement): %.1f ms\n", timeShow(seg));
  ms.clear();
  for (int i = 0; i < steps; ++i) {
    QElapsedTimer t;
    t.start();
    view.opacitySlider()->setValue((i * 100) / steps);
    repaint();
    ms.push_back(t.nsecsElapsed() / 1e6);
  }
  std::printf("opacity step (three 1920x1080 layers): median %.2f ms, max %.2f ms over %d steps\n", median(ms),
              *std::max_element(ms.begin(), ms.end()), steps);
  return 0;
}
