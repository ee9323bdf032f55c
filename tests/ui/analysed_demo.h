#pragma once
// The start of the workbench tests that need an allocation: a quiet MainWindow on the embedded demo, analysed with
// the fast settings and LFH-estimated global errors (seconds), its engine cache in `cacheDir`.
#include <QSignalSpy>
#include <QString>
#include <memory>

#include "lorq/session/api.h"
#include "main_window.h"
#include "workbench_document.h"

// nullptr when the demo is missing or the analysis fails (the caller QVERIFYs it).
inline std::unique_ptr<MainWindow> analysedDemoWindow(const QString& cacheDir) {
  auto w = std::make_unique<MainWindow>();
  w->setQuiet(true);
  w->setCacheDir(cacheDir);
  if (!w->openDemo()) return nullptr;
  lorq::api::AnalysisSettings s = lorq::api::AnalysisSettings::fast();
  s.estimate = true;
  w->setSettings(s);
  QSignalSpy done(w.get(), &MainWindow::analysisFinished);
  if (!w->startAnalysis()) return nullptr;
  if (!done.wait(600000)) return nullptr;  // bounds a hang only
  if (!done.takeFirst().at(0).toBool() || !w->state()->ready()) return nullptr;
  return w;
}
