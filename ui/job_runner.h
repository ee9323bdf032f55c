#pragma once
// Runs one long engine job at a time off the UI thread (analysis, evaluation, export, and later adaptive
// rounding): progress arrives as queued signals (throttled so a chatty job cannot flood the event loop), Cancel
// raises the engine's cancel flag, and cancelAndWait() lets a closing window stop cleanly.
#include <QElapsedTimer>
#include <QFutureWatcher>
#include <QObject>
#include <QString>
#include <atomic>
#include <functional>
#include <string>

#include "lorq/common/progress.h"

// The part of a stage a progress detail names: "layer 3/26 NAME" of "layer 3/26 NAME loss 0.41" or of
// "layer 3/26 NAME: error ..." ("" if none).
std::string progressPart(const std::string& detail);

class JobRunner : public QObject {
  Q_OBJECT
 public:
  // Runs on the worker; throws lorq::Cancelled or any std::exception to fail.
  using Work = std::function<void(const lorq::JobControl& job)>;
  // Runs on the UI thread after the work succeeded.
  using Done = std::function<void()>;

  explicit JobRunner(QObject* parent = nullptr);
  ~JobRunner() override;

  // False (and nothing started) while another job runs.
  bool start(const QString& name, Work work, Done onSuccess = {});
  bool running() const;
  QString currentJob() const { return name_; }
  void cancel();
  void cancelAndWait();
  void waitForFinished();

 signals:
  void started(const QString& name);
  // stage, units done/total, seconds in the stage, free text (e.g. "loss 0.41" for a loss curve).
  void progress(const QString& stage, qint64 done, qint64 total, double elapsed, const QString& detail);
  // error: "" on success, "cancelled", or the engine's message.
  void finished(const QString& name, bool ok, const QString& error, double seconds);
  // Emitted in the cancelling thread right after the flag is raised, so a job blocked on something other than the
  // engine (a test's gate, say) can wake at once instead of polling the flag.
  void cancelRequested();

 private:
  void onFinished();

  QFutureWatcher<QString>* watcher_;
  std::atomic<bool> cancel_{false};
  QString name_;
  Done onSuccess_;
  QElapsedTimer clock_;
};
