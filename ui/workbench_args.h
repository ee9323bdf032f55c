#pragma once
// lorq-workbench's command line. QGuiApplication consumes "--session FILE" itself (X11 session management)
// before any parser of ours sees it, so the arguments are rewritten first; anything not understood is an error.
#include <QSize>
#include <QString>
#include <QStringList>
#include <string>
#include <vector>

struct WorkbenchOptions {
  QString model, images, labels, session, screenshot;
  QSize screenshotSize{1280, 760};
  bool help = false;
  QString helpText;
  QString error;  // "" when the arguments are fine
};

// argv with "--session FILE" joined into "--session=FILE" (which Qt leaves alone); call before QApplication.
std::vector<std::string> protectWorkbenchArguments(int argc, char** argv);
// Parses the arguments QApplication left (QCoreApplication::arguments()).
WorkbenchOptions parseWorkbenchArguments(const QStringList& arguments);
