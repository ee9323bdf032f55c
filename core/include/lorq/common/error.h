#pragma once
// The one exception type the engine throws for bad input: the message names the file (or item) and the problem,
// so front ends can show it as is.
#include <stdexcept>
#include <string>

namespace lorq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
  // "<path>: <problem>"
  Error(const std::string& path, const std::string& problem) : std::runtime_error(path + ": " + problem) {}
};

}  // namespace lorq
