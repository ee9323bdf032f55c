#include "final_settings_json.h"

#include <cmath>

#include "lorq/common/error.h"

namespace lorq::api {

using nlohmann::json;

json final_settings_to_json(const FinalSettings& s) {
  return {{"refit", s.refit},
          {"activation_bits", s.activation_bits},
          {"per_token_activations", s.per_token_activations},
          {"activation_mp", s.activation_mp},
          {"ridge", s.ridge},
          {"wads", s.wads},
          {"wads_steps", s.wads_steps},
          {"recovery_steps", s.recovery_steps},
          {"recovery_lr", s.recovery_lr},
          {"recovery_images", s.recovery_images},
          {"round", s.round},
          {"round_iterations", s.round_iterations},
          {"round_images", s.round_images},
          {"round_views", s.round_views},
          {"round_per_layer", s.round_per_layer},
          {"round_checkpoint", s.round_checkpoint},
          {"keep_learned_on_cancel", s.keep_learned_on_cancel}};
}

namespace {

// Reads one field of the "final" object, leaving `out` at its default when the field is absent.
class FieldReader {
 public:
  FieldReader(const json& j, const std::string& path) : j_(j), path_(path) {}

  void boolean(const char* key, bool* out) const {
    if (const json* v = find(key)) {
      if (!v->is_boolean()) fail(key, "must be true or false");
      *out = v->get<bool>();
    }
  }
  // An integer in [lo, hi].
  void integer(const char* key, int lo, int hi, int* out) const {
    if (const json* v = find(key)) {
      if (!v->is_number_integer()) fail(key, "must be an integer");
      const int64_t x = v->get<int64_t>();
      if (x < lo || x > hi)
        fail(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + " (got " +
                      std::to_string(x) + ")");
      *out = static_cast<int>(x);
    }
  }
  void positive(const char* key, double* out) const {
    if (const json* v = find(key)) {
      if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() <= 0)
        fail(key, "must be a number > 0");
      *out = v->get<double>();
    }
  }
  void text(const char* key, std::string* out) const {
    if (const json* v = find(key)) {
      if (!v->is_string()) fail(key, "must be a string");
      *out = v->get<std::string>();
    }
  }
  [[noreturn]] void fail(const char* key, const std::string& problem) const {
    throw Error(path_, std::string("\"final\".\"") + key + "\" " + problem);
  }

 private:
  const json* find(const char* key) const {
    const auto it = j_.find(key);
    return it == j_.end() || it->is_null() ? nullptr : &*it;
  }
  const json& j_;
  const std::string& path_;
};

}  // namespace

FinalSettings final_settings_from_json(const json& j, const std::string& path) {
  if (!j.is_object()) throw Error(path, "\"final\" must be an object");
  FinalSettings s;
  const FieldReader r(j, path);
  r.boolean("refit", &s.refit);
  r.integer("activation_bits", 0, 8, &s.activation_bits);
  if (s.activation_bits != 0 && s.activation_bits != 4 && s.activation_bits != 6 && s.activation_bits != 8)
    r.fail("activation_bits", "must be 0, 4, 6 or 8 (got " + std::to_string(s.activation_bits) + ")");
  r.boolean("per_token_activations", &s.per_token_activations);
  r.boolean("activation_mp", &s.activation_mp);
  r.boolean("ridge", &s.ridge);
  r.boolean("wads", &s.wads);
  r.integer("wads_steps", 0, 1000000, &s.wads_steps);
  r.integer("recovery_steps", 0, 1000000, &s.recovery_steps);
  r.positive("recovery_lr", &s.recovery_lr);
  r.integer("recovery_images", 1, 1000000, &s.recovery_images);
  r.boolean("round", &s.round);
  r.integer("round_iterations", 1, 1000000, &s.round_iterations);
  r.integer("round_images", 1, 1000000, &s.round_images);
  r.integer("round_views", 0, 64, &s.round_views);
  r.boolean("round_per_layer", &s.round_per_layer);
  r.text("round_checkpoint", &s.round_checkpoint);
  r.boolean("keep_learned_on_cancel", &s.keep_learned_on_cancel);
  // What finalize() refuses is refused here, where the file can still be named.
  if (s.activation_bits == 0 && s.per_token_activations)
    r.fail("per_token_activations", "needs \"activation_bits\" 4, 6 or 8");
  if (s.activation_bits == 0 && s.wads) r.fail("wads", "needs \"activation_bits\" 4, 6 or 8");
  return s;
}

}  // namespace lorq::api
