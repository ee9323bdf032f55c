#include "job_runner.h"

#include <QtConcurrent>
#include <chrono>
#include <mutex>
#include <optional>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {
// The engine keeps every core busy; at a lower priority its worker (and the OpenMP team it creates, which inherits
// the niceness on Linux) yields to the UI thread, so the interface stays responsive during a job.
void lowerWorkerPriority() {
#ifdef __linux__
  thread_local bool lowered = false;
  if (!lowered) {
    setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), 10);
    lowered = true;
  }
#endif
}
}  // namespace

std::string progressPart(const std::string& detail) {
  const size_t loss = detail.rfind(" loss ");
  if (loss != std::string::npos) return detail.substr(0, loss);
  // "layer 3/26 NAME: ..." (one line per layer, e.g. the global errors): the part is "layer 3/26 NAME".
  if (detail.rfind("layer ", 0) == 0) {
    const size_t name = detail.find(' ', 6);
    const size_t end = name == std::string::npos ? name : detail.find_first_of(": ", name + 1);
    return detail.substr(0, end);
  }
  return {};
}

JobRunner::JobRunner(QObject* parent) : QObject(parent) {
  watcher_ = new QFutureWatcher<QString>(this);
  connect(watcher_, &QFutureWatcherBase::finished, this, &JobRunner::onFinished);
}

JobRunner::~JobRunner() { cancelAndWait(); }

bool JobRunner::running() const { return watcher_->isRunning(); }

void JobRunner::cancel() {
  cancel_ = true;
  emit cancelRequested();
}

void JobRunner::cancelAndWait() {
  cancel_ = true;
  emit cancelRequested();
  watcher_->waitForFinished();
}

void JobRunner::waitForFinished() { watcher_->waitForFinished(); }

bool JobRunner::start(const QString& name, Work work, Done onSuccess) {
  if (running()) return false;
  cancel_ = false;
  name_ = name;
  onSuccess_ = std::move(onSuccess);
  clock_.start();
  emit started(name);
  watcher_->setFuture(QtConcurrent::run([this, work = std::move(work)]() -> QString {
    lowerWorkerPriority();
    // At most ~30 progress signals a second, but always the first and last report of each stage and of each part
    // of a stage (a detail such as "layer 3/26 NAME loss X" without its loss: one rounded layer), so a log can say
    // where every part started and ended.
    struct Throttle {
      std::string key;
      std::chrono::steady_clock::time_point last{};
      std::optional<lorq::Progress> held;  // the latest report not sent
      std::mutex mutex;                    // the engine may report from several threads
    } throttle;
    const auto send = [this](const lorq::Progress& p) {
      emit progress(QString::fromStdString(p.stage), p.done, p.total, p.elapsed_s, QString::fromStdString(p.detail));
    };
    lorq::JobControl job;
    job.cancel = &cancel_;
    job.progress = [&throttle, send](const lorq::Progress& p) {
      std::lock_guard<std::mutex> lock(throttle.mutex);
      const auto now = std::chrono::steady_clock::now();
      const std::string key = p.stage + "\n" + progressPart(p.detail);
      const bool edge = key != throttle.key || p.done >= p.total || p.done <= 1;
      if (edge && key != throttle.key && throttle.held) send(*throttle.held);  // the previous part's last report
      if (!edge && now - throttle.last < std::chrono::milliseconds(33)) {
        throttle.held = p;
        return;
      }
      throttle.held.reset();
      throttle.key = key;
      throttle.last = now;
      send(p);
    };
    const auto flush = [&throttle, send] {
      std::lock_guard<std::mutex> lock(throttle.mutex);
      if (throttle.held) send(*throttle.held);
      throttle.held.reset();
    };
    try {
      work(job);
      flush();
      return {};
    } catch (const lorq::Cancelled&) {
      flush();
      return QStringLiteral("cancelled");
    } catch (const std::exception& e) {
      const QString msg = QString::fromStdString(e.what());
      return msg.isEmpty() ? QStringLiteral("failed") : msg;
    } catch (...) {
      return QStringLiteral("unknown error");
    }
  }));
  return true;
}

void JobRunner::onFinished() {
  const QString error = watcher_->result();
  const double seconds = clock_.elapsed() / 1000.0;
  const QString name = name_;
  Done done = std::move(onSuccess_);
  onSuccess_ = {};
  name_.clear();
  if (error.isEmpty() && done) done();
  emit finished(name, error.isEmpty(), error, seconds);
}
