#include "progress_bar.h"

#include <unistd.h>

#include <cstdio>

namespace lorq::cli {

std::string format_duration(double s) {
  if (s < 0 || s > 1e7) return "--:--";
  const long t = static_cast<long>(s + 0.5);
  char buf[32];
  if (t >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string unit) : unit_(std::move(unit)), tty_(::isatty(STDERR_FILENO)) {}

void ProgressBar::update(const Progress& p) {
  const double rate = p.elapsed_s > 0 ? p.done / p.elapsed_s : 0;
  const double eta = rate > 0 && p.total > 0 ? (p.total - p.done) / rate : -1;
  const bool last = p.total > 0 && p.done >= p.total;
  if (tty_) {
    const int width = 30;
    const int filled = p.total > 0 ? static_cast<int>(width * double(p.done) / p.total) : 0;
    std::string bar(filled, '#');
    bar += std::string(width - filled, '.');
    std::fprintf(stderr, "\r%s [%s] %lld/%lld %s  %.1f %s/s  ETA %s %s   ", p.stage.c_str(), bar.c_str(),
                 (long long)p.done, (long long)p.total, unit_.c_str(), rate, unit_.c_str(), format_duration(eta).c_str(),
                 p.detail.c_str());
    std::fflush(stderr);
    drawn_ = true;
  } else if (last || p.elapsed_s - last_print_ >= 5.0) {
    // Not a terminal: a plain line at most every 5 s, and at the end.
    std::fprintf(stderr, "%s: %lld/%lld %s, %.1f %s/s, elapsed %s, ETA %s %s\n", p.stage.c_str(), (long long)p.done,
                 (long long)p.total, unit_.c_str(), rate, unit_.c_str(), format_duration(p.elapsed_s).c_str(),
                 format_duration(eta).c_str(), p.detail.c_str());
    last_print_ = p.elapsed_s;
  }
}

void ProgressBar::finish() {
  if (tty_ && drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

JobControl StagedProgressBar::job() {
  JobControl j;
  j.progress = [this](const Progress& p) {
    if (p.stage != stage_) {
      bar_.finish();
      stage_ = p.stage;
    }
    Progress q = p;
    if (overall_.update(p)) {
      const double eta = overall_.eta_seconds();
      char note[96];
      std::snprintf(note, sizeof note, " [%s %.0f%%, ETA %s]", job_.c_str(), 100 * overall_.fraction(),
                    eta < 0 ? "--:--" : format_duration(eta).c_str());
      q.stage += note;
    }
    bar_.update(q);
  };
  return j;
}

}  // namespace lorq::cli
