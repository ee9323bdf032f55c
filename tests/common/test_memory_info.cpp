// The /proc readings the LFH stage sizes its chunks with: present on Linux, and the peak follows a large allocation
// made after a reset.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "lorq/common/memory_info.h"

TEST(MemoryInfo, ReadsTheMachineAndTheProcess) {
  EXPECT_GT(lorq::available_memory_bytes(), 0);
  EXPECT_GT(lorq::resident_bytes(), 0);
  EXPECT_GE(lorq::peak_resident_bytes(), lorq::resident_bytes());
}

TEST(MemoryInfo, PeakFollowsAnAllocationAfterAReset) {
  if (!lorq::reset_peak_resident()) GTEST_SKIP() << "this kernel does not allow resetting VmHWM";
  const int64_t before = lorq::resident_bytes();
  const int64_t size = int64_t(256) << 20;
  {
    std::vector<char> block(static_cast<size_t>(size));
    std::memset(block.data(), 1, block.size());  // touched: resident, not only reserved
    EXPECT_GT(lorq::resident_bytes(), before + size / 2);
  }
  EXPECT_GT(lorq::peak_resident_bytes(), before + size / 2);
}
