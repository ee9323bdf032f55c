#pragma once
// A session file's "final" object: the FinalSettings the user last applied (lorq/session/api.h SessionFile).
// Private to save_session_file / load_session_file; torch-free so it compiles in seconds.
#include <nlohmann/json.hpp>
#include <string>

#include "lorq/session/api.h"

namespace lorq::api {

nlohmann::json final_settings_to_json(const FinalSettings& settings);
// Fields missing from `j` keep their defaults (files written before a field existed); a field of the wrong type or
// out of range throws lorq::Error naming `path` and the field ("final"."activation_bits").
FinalSettings final_settings_from_json(const nlohmann::json& j, const std::string& path);

}  // namespace lorq::api
