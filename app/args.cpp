#include "args.h"

#include <algorithm>
#include <vector>

namespace lorq::cli {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// The known flag closest to a mistyped one, when it is close enough to be what was meant.
std::string nearest_flag(const std::string& name, const std::set<std::string>& valued,
                         const std::set<std::string>& switches) {
  std::string best;
  size_t best_d = std::string::npos;
  for (const auto* set : {&valued, &switches})
    for (const std::string& f : *set) {
      const size_t d = edit_distance(name, f);
      if (d < best_d) best_d = d, best = f;
    }
  return best_d <= std::max<size_t>(2, name.size() / 3) ? best : "";
}

}  // namespace

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
      std::string known = nearest_flag(name, valued, switches);
      throw UsageError("unknown option " + name + (known.empty() ? "" : " (did you mean " + known + "?)"));
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
    if (v < min || v > max)
      throw UsageError(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max));
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
    if (!(v >= min && v <= max))
      throw UsageError(flag + " must be between " + std::to_string(min) + " and " + std::to_string(max));
    return v;
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception&) {
    throw UsageError(flag + " expects a number, got '" + it->second + "'");
  }
}

}  // namespace lorq::cli
