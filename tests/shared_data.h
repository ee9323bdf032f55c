#pragma once
// Access to ../shared (real weights and images beside the checkout). Tests that need it skip with a message when
// it is absent, unless LORQ_REQUIRE_SHARED=1 (set by .ci/run), which turns its absence into a failure.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace lorq::testdata {

inline std::string shared_path(const std::string& rel) {
  const char* env = std::getenv("LORQ_SHARED_DIR");
  return std::string(env ? env : LORQ_SHARED_DIR) + "/" + rel;
}

inline std::string source_path(const std::string& rel) { return std::string(LORQ_SOURCE_DIR) + "/" + rel; }

inline bool shared_required() {
  const char* env = std::getenv("LORQ_REQUIRE_SHARED");
  return env && std::string(env) == "1";
}

}  // namespace lorq::testdata

// Skips (or fails under LORQ_REQUIRE_SHARED=1) when a ../shared file is missing.
#define LORQ_REQUIRE_SHARED_FILE(path)                                                           \
  do {                                                                                           \
    if (!std::filesystem::exists(path)) {                                                        \
      if (lorq::testdata::shared_required()) FAIL() << "required shared data missing: " << (path); \
      GTEST_SKIP() << "shared data not found, skipping: " << (path);                            \
    }                                                                                            \
  } while (0)
