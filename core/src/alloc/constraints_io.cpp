#include "lorq/alloc/constraints_io.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lorq/common/error.h"

namespace lorq {

namespace {

const LayerCandidates* find_layer(const CompressionAnalysis& a, const std::string& name) {
  for (const auto& l : a.layers)
    if (l.layer == name) return &l;
  return nullptr;
}

}  // namespace

Constraints constraints_from_json(const std::string& text, const CompressionAnalysis& a, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw Error(source, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) throw Error(source, "expected a JSON object with \"layers\" and/or \"groups\"");
  if (j.contains("version") && j["version"] != 1) throw Error(source, "unsupported constraints version");
  Constraints c;
  try {
    const nlohmann::json layers = j.value("layers", nlohmann::json::object());
    if (!layers.is_object()) throw Error(source, "\"layers\" must be an object");
    for (const auto& [name, v] : layers.items()) {
      const LayerCandidates* l = find_layer(a, name);
      if (!l) throw Error(source, "unknown layer '" + name + "'");
      if (!v.is_object()) throw Error(source, "layer '" + name + "': expected an object");
      LayerConstraint lc;
      if (v.contains("pin")) {
        const std::string label = v["pin"].get<std::string>();
        for (size_t i = 0; i < l->options.size(); ++i)
          if (l->options[i].label() == label) lc.pinned_option = static_cast<int>(i);
        if (lc.pinned_option < 0) throw Error(source, "layer '" + name + "' has no option '" + label + "'");
      } else if (v.contains("pin_option")) {  // version-1 session files pinned by option index
        const int index = v["pin_option"].get<int>();
        if (index < 0 || index >= static_cast<int>(l->options.size()))
          throw Error(source, "layer '" + name + "' has no option " + std::to_string(index) + " (it has " +
                                  std::to_string(l->options.size()) + ")");
        lc.pinned_option = index;
      }
      lc.min_bits = v.value("min_bits", 0);
      lc.max_rank = v.value("max_rank", int64_t(-1));
      if (lc.min_bits < 0 || lc.min_bits > 8) throw Error(source, "layer '" + name + "': min_bits must be 0..8");
      const std::string ex = v.value("exclude", std::string("none"));
      if (ex == "q8") {
        lc.excluded = Exclusion::Q8;
      } else if (ex == "float") {
        lc.excluded = Exclusion::Float;
      } else if (ex != "none") {
        throw Error(source, "layer '" + name + "': exclude must be \"none\", \"q8\" or \"float\", not '" + ex + "'");
      }
      c.layers[name] = lc;
    }
    const nlohmann::json groups = j.value("groups", nlohmann::json::array());
    for (const auto& g : groups) {
      std::vector<std::string> group = g.get<std::vector<std::string>>();
      for (const std::string& name : group)
        if (!find_layer(a, name)) throw Error(source, "group names unknown layer '" + name + "'");
      c.groups.push_back(group);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(source, std::string("bad constraints (") + e.what() + ")");
  }
  return c;
}

Constraints read_constraints(const std::string& path, const CompressionAnalysis& a) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the constraints file");
  std::stringstream ss;
  ss << in.rdbuf();
  return constraints_from_json(ss.str(), a, path);
}

std::string constraints_to_json(const Constraints& c, const CompressionAnalysis& a) {
  nlohmann::json layers = nlohmann::json::object();
  for (const auto& [name, lc] : c.layers) {
    nlohmann::json v = nlohmann::json::object();
    const LayerCandidates* l = find_layer(a, name);
    if (lc.pinned_option >= 0 && l && lc.pinned_option < static_cast<int>(l->options.size()))
      v["pin"] = l->options[lc.pinned_option].label();
    if (lc.min_bits > 0) v["min_bits"] = lc.min_bits;
    if (lc.max_rank >= 0) v["max_rank"] = lc.max_rank;
    if (lc.excluded != Exclusion::None) v["exclude"] = lc.excluded == Exclusion::Q8 ? "q8" : "float";
    layers[name] = v;
  }
  return nlohmann::json{{"version", 1}, {"layers", layers}, {"groups", c.groups}}.dump(1);
}

}  // namespace lorq
