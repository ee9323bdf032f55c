#include "args.h"

namespace lorq::cli {

Args::Args(int argc, char** argv, int first, const std::set<std::string>& valued,
           const std::set<std::string>& switches) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help_ = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || a == "--") {
      positional_.push_back(a);
      continue;
    }
    std::string name = a, value;
    bool inline_value = false;
    if (auto eq = a.find('='); eq != std::string::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
    if (valued.count(name)) {
      if (!inline_value) {
        if (i + 1 >= argc) throw UsageError(name + " needs a value");
        value = argv[++i];
      }
      values_[name] = value;
    } else if (switches.count(name) && !inline_value) {
      switches_.insert(name);
    } else {
      throw UsageError("unknown option " + name);
    }
  }
}

std::string Args::get(const std::string& flag, const std::string& fallback) const {
  auto it = values_.find(flag);
  return it == values_.end() ? fallback : it->second;
}

std::string Args::require(const std::string& flag) const {
  auto it = values_.find(flag);
  if (it == values_.end() || it->second.empty()) throw UsageError(flag + " is required");
  return it->second;
}

long long Args::get_int(const std::string& flag, long long fallback, long long min, long long max) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing");
    if (v < min || v > max) throw UsageError(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max));
    return v;
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception&) {
    throw UsageError(flag + " expects an integer, got '" + it->second + "'");
  }
}

double Args::get_double(const std::string& flag, double fallback, double min, double max) const {
  auto it = values_.find(flag);
  if (it == values_.end()) return fallback;
  try {
    size_t used = 0;
    double v = std::stod(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing");
    if (!(v >= min && v <= max)) throw UsageError(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max));
    return v;
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception&) {
    throw UsageError(flag + " expects a number, got '" + it->second + "'");
  }
}

}  // namespace lorq::cli
