#pragma once
// Metric figures in the session file's JSON (sweeps and method comparisons share the form).
#include <nlohmann/json.hpp>
#include <vector>

#include "lorq/types.h"

namespace lorq::api {

inline nlohmann::json metrics_json(const std::vector<MetricValue>& metrics) {
  nlohmann::json a = nlohmann::json::array();
  for (const MetricValue& m : metrics) a.push_back({{"name", m.name}, {"value", m.value}, {"percent", m.percent}});
  return a;
}

inline std::vector<MetricValue> metrics_from(const nlohmann::json& a) {
  std::vector<MetricValue> out;
  for (const nlohmann::json& m : a)
    out.push_back({m.at("name").get<std::string>(), m.at("value").get<double>(), m.value("percent", true)});
  return out;
}

}  // namespace lorq::api
