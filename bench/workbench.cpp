// bench_workbench: how the workbench feels. Per budget step: the exact re-allocation plus every view's update
// (tables, three plots replotted and painted), target < 16 ms; and the UI event loop's longest stall while an
// analysis job runs on the worker, target < 50 ms. On the demo (fast settings, analyzed once into the user cache)
// and on DeiT-Tiny when its analysis is already cached (lorq compress --model M --calib DIR --cache DIR).
//
// Usage: bench_workbench [--deit-cache DIR] [--steps N]   (runs offscreen unless QT_QPA_PLATFORM is set)
#include <QApplication>
#include <QDir>
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QSlider>
#include <QStandardPaths>
#include <QTemporaryDir>
#include <QTimer>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "budget_view.h"
#include "job_runner.h"
#include "lorq/session/api.h"
#include "main_window.h"
#include "workbench_document.h"

using namespace lorq::api;

namespace {

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
}

bool waitFor(QObject* sender, const char* signal, int ms) {
  QSignalSpy spy(sender, signal);
  return spy.wait(ms) && spy.takeFirst().at(0).toBool();
}

// Drags the budget slider across its range; each step: solve + all views + the paint it triggers.
void benchBudgetSteps(MainWindow& w, const char* name, int steps) {
  QSlider* slider = w.budgetView()->slider();
  std::vector<double> ms, solve_ms;
  const std::shared_ptr<const Allocator> allocator = w.state()->allocator();
  for (int i = 0; i < steps; ++i) {
    const int value = (i * 7919) % BudgetView::kSliderSteps;  // jumps across the range, not a smooth walk
    QElapsedTimer t;
    t.start();
    slider->setValue(value);
    QApplication::processEvents();  // queued replots
    QApplication::processEvents();  // the paint they request
    ms.push_back(t.nsecsElapsed() / 1e6);
    QElapsedTimer s;
    s.start();
    allocator->solve(w.state()->budget());
    solve_ms.push_back(s.nsecsElapsed() / 1e6);
  }
  std::printf("%-10s budget step (solve + update + paint): median %.2f ms, p95 %.2f ms, max %.2f ms  [target < 16]\n",
              name, percentile(ms, 0.5), percentile(ms, 0.95), percentile(ms, 1.0));
  std::printf("%-10s   of which the solve alone: median %.3f ms, max %.3f ms (%zu layers)\n", name,
              percentile(solve_ms, 0.5), percentile(solve_ms, 1.0), w.state()->layers().size());
}

// The longest gap between 2 ms timer ticks while an analysis job runs (fresh cache), with the slider moving.
void benchStall(MainWindow& w, double seconds) {
  QTemporaryDir cache;
  w.setCacheDir(cache.path());
  AnalysisSettings s = AnalysisSettings::fast();
  w.setSettings(s);
  if (!w.startAnalysis()) return;
  std::vector<double> gaps;
  QElapsedTimer clock;
  clock.start();
  qint64 last = clock.nsecsElapsed();
  QTimer tick;
  tick.setInterval(2);
  QObject::connect(&tick, &QTimer::timeout, [&] {
    const qint64 now = clock.nsecsElapsed();
    gaps.push_back((now - last) / 1e6);
    last = now;
    if (w.state()->ready()) w.budgetView()->slider()->setValue(static_cast<int>(now / 1000000) % 2000);
  });
  tick.start();
  QElapsedTimer run;
  run.start();
  while (run.elapsed() < seconds * 1000 && w.jobRunning())
    QApplication::processEvents(QEventLoop::WaitForMoreEvents, 5);
  tick.stop();
  const bool stillRunning = w.jobRunning();
  w.jobs()->cancelAndWait();
  QApplication::processEvents();
  std::printf(
      "event loop during a running analysis (%.1f s, %zu ticks%s): longest stall %.1f ms, p99 %.1f ms  "
      "[target < 50]\n",
      run.elapsed() / 1000.0, gaps.size(), stillRunning ? "" : ", job ended early", percentile(gaps, 1.0),
      percentile(gaps, 0.99));
}

}  // namespace

int main(int argc, char** argv) {
  if (qEnvironmentVariableIsEmpty("QT_QPA_PLATFORM")) qputenv("QT_QPA_PLATFORM", "offscreen");
  QApplication app(argc, argv);
  QApplication::setApplicationName("LoRQ Workbench");
  QApplication::setOrganizationName("LoRQ");
  init_engine();
  QString deitCache = qEnvironmentVariable("LORQ_DEIT_CACHE", "/tmp/deit-cache");
  int steps = 300;
  for (int i = 1; i + 1 < argc; ++i) {
    if (!std::strcmp(argv[i], "--deit-cache")) deitCache = argv[i + 1];
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
  }

  MainWindow w;
  w.setQuiet(true);
  w.resize(1500, 950);
  w.show();
  // The demo, analyzed once into the user cache (the same one --screenshot fills).
  w.setSettings(AnalysisSettings::fast());
  if (!w.openDemo()) return 1;
  QElapsedTimer t;
  t.start();
  if (!w.startAnalysis() || !waitFor(&w, SIGNAL(analysisFinished(bool)), 600000)) {
    std::fprintf(stderr, "demo analysis failed: %s\n", qPrintable(w.lastError()));
    return 1;
  }
  QApplication::processEvents();
  std::printf("demo analysis (fast settings, cache %s): %.2f s\n", qPrintable(w.cacheDir()), t.elapsed() / 1000.0);
  benchBudgetSteps(w, "demo", steps);

  const QString deit = QString(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  const QString imagenet = QString(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  if (QDir(deit).exists()) {
    MainWindow d;
    d.setQuiet(true);
    d.resize(1500, 950);
    d.show();
    d.setCacheDir(deitCache);
    d.setSettings(AnalysisSettings());  // the CLI's defaults
    bool cached = false;
    try {
      cached = CompressionSession::open(deit.toStdString(), imagenet.toStdString(), "", AnalysisSettings(),
                                        deitCache.toStdString())
                   ->has_cached_analysis();
    } catch (const std::exception& e) {
      std::printf("DeiT-Tiny: %s\n", e.what());
    }
    if (!cached) {
      std::printf(
          "DeiT-Tiny: no cached analysis in %s (lorq compress --model %s --calib %s --avg-bits 4 --cache %s);"
          " demo only\n",
          qPrintable(deitCache), qPrintable(deit), qPrintable(imagenet), qPrintable(deitCache));
    } else if (d.openModel(deit) && d.setImages(imagenet, "") && d.startAnalysis() &&
               waitFor(&d, SIGNAL(analysisFinished(bool)), 600000)) {
      QApplication::processEvents();
      benchBudgetSteps(d, "deit-tiny", steps);
    }
  }

  benchStall(w, 10.0);
  return 0;
}
