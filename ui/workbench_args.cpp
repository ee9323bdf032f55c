#include "workbench_args.h"

#include <QCommandLineParser>

std::vector<std::string> protectWorkbenchArguments(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--session" && i + 1 < argc) {
      out.push_back(a + "=" + argv[++i]);
      continue;
    }
    out.push_back(a);
  }
  return out;
}

WorkbenchOptions parseWorkbenchArguments(const QStringList& arguments) {
  WorkbenchOptions o;
  QCommandLineParser parser;
  parser.setApplicationDescription("Compress vision transformers: low-rank + mixed-precision quantization");
  const QCommandLineOption help({"h", "help"}, "Show this help.");
  const QCommandLineOption model({"m", "model"}, "Model folder or .safetensors file (default: the embedded demo).",
                                 "path");
  const QCommandLineOption images({"i", "images"}, "Calibration image folder.", "dir");
  const QCommandLineOption labels("labels", "labels.csv for the image folder.", "csv");
  const QCommandLineOption session("session", "Open a saved session (.lorq).", "file");
  const QCommandLineOption screenshot("screenshot", "Analyze (fast settings), render the window to a PNG and exit.",
                                      "file");
  const QCommandLineOption size("size", "Window size for --screenshot (default 1280x760).", "WxH");
  parser.addOptions({help, model, images, labels, session, screenshot, size});
  o.helpText = parser.helpText();
  if (!parser.parse(arguments)) {
    o.error = parser.errorText();
    return o;
  }
  if (!parser.positionalArguments().isEmpty()) {
    o.error = QString("unexpected argument '%1' (see --help)").arg(parser.positionalArguments().first());
    return o;
  }
  o.help = parser.isSet(help);
  o.model = parser.value(model);
  o.images = parser.value(images);
  o.labels = parser.value(labels);
  o.session = parser.value(session);
  o.screenshot = parser.value(screenshot);
  if (parser.isSet(size)) {
    const QStringList wh = parser.value(size).split('x');
    bool okW = false, okH = false;
    const int w = wh.size() == 2 ? wh[0].toInt(&okW) : 0, h = wh.size() == 2 ? wh[1].toInt(&okH) : 0;
    if (!okW || !okH || w < 200 || h < 200) {
      o.error = QString("--size '%1': expected WIDTHxHEIGHT, e.g. 1280x760").arg(parser.value(size));
      return o;
    }
    o.screenshotSize = QSize(w, h);
  }
  if (!o.session.isEmpty() && (!o.model.isEmpty() || !o.images.isEmpty() || !o.screenshot.isEmpty()))
    o.error =
        "--session names the model and images itself; it does not combine with --model, --images or "
        "--screenshot";
  return o;
}
