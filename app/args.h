#pragma once
// A small command-line parser for the lorq tools: --flag VALUE, --flag=VALUE, boolean --switches, positionals.
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace lorq::cli {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thrown by a command's parser when --help was given, so the command prints its help and does nothing else.
class HelpRequested : public std::exception {};

class Args {
 public:
  // `valued` flags take a value, `switches` do not; anything else starting with "--" is an error.
  Args(int argc, char** argv, int first, const std::set<std::string>& valued, const std::set<std::string>& switches);

  bool has(const std::string& flag) const { return values_.count(flag) || switches_.count(flag); }
  std::string get(const std::string& flag, const std::string& fallback = "") const;
  std::string require(const std::string& flag) const;
  long long get_int(const std::string& flag, long long fallback, long long min, long long max) const;
  double get_double(const std::string& flag, double fallback, double min, double max) const;
  const std::vector<std::string>& positional() const { return positional_; }
  bool help() const { return help_; }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> switches_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

}  // namespace lorq::cli
