// lorq-workbench: the GUI. Opens the embedded demo unless told otherwise.
#include <QApplication>
#include <QCommandLineParser>
#include <QTimer>

#include "lorq/api.h"
#include "main_window.h"

int main(int argc, char** argv) {
  QApplication app(argc, argv);
  QApplication::setApplicationName("LoRQ Workbench");
  QApplication::setOrganizationName("LoRQ");
  lorq::api::init_engine();

  QCommandLineParser parser;
  parser.setApplicationDescription("Compress vision transformers: low-rank + mixed-precision quantization");
  parser.addHelpOption();
  QCommandLineOption model({"m", "model"}, "Model folder or .safetensors file (default: the embedded demo).", "path");
  QCommandLineOption images({"i", "images"}, "Image folder.", "dir");
  QCommandLineOption labels("labels", "labels.csv for the image folder.", "csv");
  QCommandLineOption screenshot("screenshot", "Evaluate, render the window to a PNG and exit.", "file");
  parser.addOptions({model, images, labels, screenshot});
  parser.process(app);

  MainWindow window;
  const lorq::api::DemoPaths demo = lorq::api::find_demo();
  const QString modelPath = parser.isSet(model) ? parser.value(model) : QString::fromStdString(demo.model_dir);
  if (!modelPath.isEmpty()) window.openModel(modelPath, parser.isSet(screenshot));
  if (parser.isSet(images)) {
    window.setImages(parser.value(images), parser.value(labels));
  } else if (!demo.images_dir.empty()) {
    window.setImages(QString::fromStdString(demo.images_dir), QString::fromStdString(demo.labels_csv));
  }
  if (parser.isSet(screenshot)) {
    const QString file = parser.value(screenshot);
    int rc = 0;
    QObject::connect(&window, &MainWindow::evaluationFinished, &app, [&](bool ok) {
      window.grab().save(file);
      rc = ok ? 0 : 1;
      app.quit();
    });
    window.show();
    QTimer::singleShot(0, &window, &MainWindow::startEvaluation);
    app.exec();
    return rc;
  }
  window.show();
  return app.exec();
}
