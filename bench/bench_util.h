#pragma once
// Small helpers shared by the benchmarks: a wall clock and the process's peak resident memory.
#include <chrono>
#include <fstream>
#include <string>

namespace lorq::bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// VmHWM of /proc/self/status in MB (0 where it is not available).
inline double peak_rss_mb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

}  // namespace lorq::bench
