#pragma once
// Reading config files (timm and Hugging Face config.json, preprocessor_config.json): every problem is a
// lorq::Error naming the file and the field. Header-only over nlohmann::json; for the engine's parsers (not the UI).
#include <nlohmann/json.hpp>
#include <string>

#include "lorq/common/error.h"

namespace lorq {

// The text as a JSON object. Throws lorq::Error(source, ...) for invalid JSON or another value than an object.
inline nlohmann::json parse_json_object(const std::string& text, const std::string& source) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(source, std::string("invalid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) throw Error(source, "the config is not a JSON object");
  return j;
}

// Sets `out` from j[key] when the field is present and not null; a value of another type is an error.
template <typename T>
void read_if(const nlohmann::json& j, const char* key, T& out, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  try {
    out = it->get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(source, std::string("field '") + key + "' has the wrong type (" + e.what() + ")");
  }
}

}  // namespace lorq
