// lorq-workbench: the GUI. Opens the embedded demo unless told otherwise.
#include <QApplication>
#include <QDockWidget>
#include <QTimer>
#include <cstdio>

#include "lorq/session/api.h"
#include "main_window.h"
#include "workbench_args.h"
#include "workbench_document.h"

namespace {

// --screenshot: the demo (or --model/--images) analyzed with fast settings, a 4-bit budget, one layer selected
// and an evaluation, rendered to FILE; the compare dock goes to FILE with "-compare" before the extension.
int screenshot(QApplication& app, MainWindow& window, const QString& file, QSize size) {
  int rc = 1;
  window.setQuiet(true);
  window.setSettings(lorq::api::AnalysisSettings::fast());
  window.resize(size);
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
  // Qt would take "--session FILE" for itself: rewritten before QApplication sees it.
  std::vector<std::string> protectedArgs = protectWorkbenchArguments(argc, argv);
  std::vector<char*> args;
  for (std::string& a : protectedArgs) args.push_back(a.data());
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);
  QApplication app(count, args.data());
  QApplication::setApplicationName("LoRQ Workbench");
  QApplication::setOrganizationName("LoRQ");

  const WorkbenchOptions options = parseWorkbenchArguments(QApplication::arguments());
  if (!options.error.isEmpty()) {
    std::fprintf(stderr, "lorq-workbench: %s\n", qPrintable(options.error));
    return 2;
  }
  if (options.help) {
    std::printf("%s", qPrintable(options.helpText));
    return 0;
  }
  lorq::api::init_engine();

  MainWindow window;
  const bool shooting = !options.screenshot.isEmpty();
  if (!options.session.isEmpty()) {
    window.show();
    window.openSession(options.session);  // a problem is shown in a dialog; the window stays for another try
    return app.exec();
  }
  const lorq::api::DemoPaths demo = lorq::api::find_demo();
  const QString modelPath = !options.model.isEmpty() ? options.model : QString::fromStdString(demo.model_dir);
  if (!modelPath.isEmpty()) window.openModel(modelPath, shooting);
  if (!options.images.isEmpty()) {
    window.setImages(options.images, options.labels);
  } else if (!demo.images_dir.empty()) {
    window.setImages(QString::fromStdString(demo.images_dir), QString::fromStdString(demo.labels_csv));
  }
  if (shooting) return screenshot(app, window, options.screenshot, options.screenshotSize);
  window.show();
  return app.exec();
}
