#pragma once
// Progress reporting and cancellation shared by every long job of the engine (evaluation, training, later stages).
// Front ends pass a callback and an atomic flag; the engine calls back from the worker thread and stops at the
// next safe point once the flag is raised, throwing Cancelled.
#include <atomic>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace lorq {

struct Progress {
  std::string stage;    // what is running, e.g. "eval"
  int64_t done = 0;     // units finished
  int64_t total = 0;    // units in all (0 when unknown)
  double elapsed_s = 0; // since the stage started
  std::string detail;   // free text for logs, e.g. "loss 0.41"
};

using ProgressFn = std::function<void(const Progress&)>;

class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("cancelled") {}
};

// What every long job takes: where to report and what to watch.
struct JobControl {
  ProgressFn progress;                  // may be empty
  const std::atomic<bool>* cancel = nullptr;  // may be null

  bool cancelled() const { return cancel && cancel->load(std::memory_order_relaxed); }
  void check() const {
    if (cancelled()) throw Cancelled();
  }
  void report(const Progress& p) const {
    if (progress) progress(p);
  }
};

}  // namespace lorq
