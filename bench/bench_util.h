#pragma once
// Small helpers shared by the benchmarks: a wall clock and the process's peak resident memory.
#include <chrono>
#include <string>

#include "lorq/common/memory_info.h"

namespace lorq::bench {

inline double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// VmHWM of /proc/self/status in MB (0 where it is not available).
inline double peak_rss_mb() { return double(peak_resident_bytes()) / (1024.0 * 1024.0); }

}  // namespace lorq::bench
