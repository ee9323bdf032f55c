#include "lorq/common/memory_info.h"

#include <fstream>
#include <string>

namespace lorq {

namespace {

// The "<key>: <n> kB" line of a /proc file, in bytes.
int64_t proc_kb_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) {
      try {
        return std::stoll(line.substr(key.size())) * 1024;
      } catch (...) {
        return 0;
      }
    }
  return 0;
}

}  // namespace

int64_t available_memory_bytes() { return proc_kb_field("/proc/meminfo", "MemAvailable:"); }
int64_t resident_bytes() { return proc_kb_field("/proc/self/status", "VmRSS:"); }
int64_t peak_resident_bytes() { return proc_kb_field("/proc/self/status", "VmHWM:"); }

bool reset_peak_resident() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";  // 5: reset the peak resident set size (proc(5))
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace lorq
