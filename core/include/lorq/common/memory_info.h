#pragma once
// What the machine and this process hold in memory (Linux /proc; 0 where it cannot be read): how stages that hold
// one copy of the activations per batch entry size their batches before the kernel's OOM killer does it for them.
#include <cstdint>

namespace lorq {

int64_t available_memory_bytes();  // MemAvailable of /proc/meminfo
int64_t resident_bytes();          // VmRSS of /proc/self/status
int64_t peak_resident_bytes();     // VmHWM of /proc/self/status
// Restarts VmHWM at the current resident size (/proc/self/clear_refs); false where the kernel does not allow it.
bool reset_peak_resident();

}  // namespace lorq
