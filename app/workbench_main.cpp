// lorq-workbench: the GUI. Opens the embedded demo unless told otherwise.
#include <QApplication>
#include <QCommandLineParser>
#include <QDockWidget>
#include <QTimer>

#include "lorq/session/api.h"
#include "main_window.h"
#include "workbench_state.h"

namespace {

// --screenshot: the demo (or --model/--images) analyzed with fast settings, a 4-bit budget, one layer selected
// and an evaluation, rendered to FILE; the compare dock goes to FILE with "-compare" before the extension.
int screenshot(QApplication& app, MainWindow& window, const QString& file) {
  int rc = 1;
  window.setQuiet(true);
  window.setSettings(lorq::api::AnalysisSettings::fast());
  window.resize(1600, 1000);
  window.show();
  window.resetLayout();  // the default arrangement, whatever the user's saved one
  QObject::connect(&window, &MainWindow::analysisFinished, &window, [&](bool ok) {
    if (!ok) {
      window.grab().save(file);
      app.exit(1);
      return;
    }
    const auto& layers = window.state()->layers();
    window.state()->setSelectedLayer(layers.size() > 4 ? 4 : 0);
    window.startEvaluation();
  });
  QObject::connect(&window, &MainWindow::evaluationFinished, &window, [&](bool ok) {
    if (auto* allocation = window.findChild<QDockWidget*>("allocationDock")) allocation->raise();
    QApplication::processEvents();
    window.grab().save(file);
    window.compareDock()->raise();
    QApplication::processEvents();
    QString compare = file;
    const int dot = compare.lastIndexOf('.');
    compare.insert(dot > 0 ? dot : compare.size(), "-compare");
    window.grab().save(compare);
    rc = ok ? 0 : 1;
    app.quit();
  });
  QTimer::singleShot(0, &window, [&] {
    if (!window.startAnalysis()) app.exit(1);
  });
  app.exec();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("LoRQ Workbench");
  QApplication::setOrganizationName("LoRQ");
  lorq::api::init_engine();

  QCommandLineParser parser;
  parser.setApplicationDescription("Compress vision transformers: low-rank + mixed-precision quantization");
  parser.addHelpOption();
  QCommandLineOption model({"m", "model"}, "Model folder or .safetensors file (default: the embedded demo).", "path");
  QCommandLineOption images({"i", "images"}, "Calibration image folder.", "dir");
  QCommandLineOption labels("labels", "labels.csv for the image folder.", "csv");
  QCommandLineOption session("session", "Open a saved session (.lorq).", "file");
  QCommandLineOption screenshotOption("screenshot", "Analyze (fast settings), render the window to a PNG and exit.",
                                      "file");
  parser.addOptions({model, images, labels, session, screenshotOption});
  parser.process(app);

  MainWindow window;
  const bool shooting = parser.isSet(screenshotOption);
  if (parser.isSet(session)) {
    window.show();
    window.openSession(parser.value(session));
    return app.exec();
  }
  const lorq::api::DemoPaths demo = lorq::api::find_demo();
  const QString modelPath = parser.isSet(model) ? parser.value(model) : QString::fromStdString(demo.model_dir);
  if (!modelPath.isEmpty()) window.openModel(modelPath, shooting);
  if (parser.isSet(images)) {
    window.setImages(parser.value(images), parser.value(labels));
  } else if (!demo.images_dir.empty()) {
    window.setImages(QString::fromStdString(demo.images_dir), QString::fromStdString(demo.labels_csv));
  }
  if (shooting) return screenshot(app, window, parser.value(screenshotOption));
  window.show();
  return app.exec();
}
