// A session file's "final" object (the workbench's Analysis › Final model… settings): every FinalSettings field
// survives a save and a load, a file without it (written before it existed) loads without settings, and a malformed
// value is refused with a lorq::Error naming the file and the field. No model is needed: files only.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "lorq/common/error.h"
#include "lorq/session/api.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/lorq_final_settings_" + name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

// Every field away from its default, so a field the file forgets cannot pass.
api::FinalSettings unusual_settings() {
  api::FinalSettings s;
  s.refit = true;
  s.activation_bits = 6;
  s.activation_mp = true;
  s.ridge = false;
  s.round = true;
  s.round_iterations = 37;
  s.round_images = 19;
  s.round_views = 6;
  s.round_per_layer = true;
  s.round_checkpoint = "/tmp/rounding checkpoint.safetensors";
  s.keep_learned_on_cancel = true;
  s.per_token_activations = true;
  s.wads = true;
  s.wads_steps = 7;
  s.recovery_steps = 11;
  s.recovery_lr = 3.5e-5;
  s.recovery_images = 23;
  return s;
}

void expect_same(const api::FinalSettings& a, const api::FinalSettings& b) {
  EXPECT_EQ(a.refit, b.refit);
  EXPECT_EQ(a.activation_bits, b.activation_bits);
  EXPECT_EQ(a.activation_mp, b.activation_mp);
  EXPECT_EQ(a.ridge, b.ridge);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.round_iterations, b.round_iterations);
  EXPECT_EQ(a.round_images, b.round_images);
  EXPECT_EQ(a.round_views, b.round_views);
  EXPECT_EQ(a.round_per_layer, b.round_per_layer);
  EXPECT_EQ(a.round_checkpoint, b.round_checkpoint);
  EXPECT_EQ(a.keep_learned_on_cancel, b.keep_learned_on_cancel);
  EXPECT_EQ(a.per_token_activations, b.per_token_activations);
  EXPECT_EQ(a.wads, b.wads);
  EXPECT_EQ(a.wads_steps, b.wads_steps);
  EXPECT_EQ(a.recovery_steps, b.recovery_steps);
  EXPECT_EQ(a.recovery_lr, b.recovery_lr);
  EXPECT_EQ(a.recovery_images, b.recovery_images);
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A minimal version-2 session file with `final` (a JSON value) as its "final" object.
std::string with_final(const std::string& final) {
  return R"({"format": "lorq-session", "version": 2, "model": "m", "images": "i", "final": )" + final + "}";
}

// The message load_session_file gives for the file, or "" when it loads.
std::string load_error(const std::string& path) {
  try {
    api::load_session_file(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(SessionFinalSettings, EveryFieldSurvivesSaveAndLoad) {
  const std::string dir = temp_dir("round_trip");
  api::SessionFile f;
  f.model_path = "model";
  f.images = "images";
  f.final_settings = unusual_settings();
  api::save_session_file(dir + "/s.lorq", f);
  const api::SessionFile g = api::load_session_file(dir + "/s.lorq");
  ASSERT_TRUE(g.final_settings.has_value());
  expect_same(*g.final_settings, unusual_settings());

  // The defaults too (a user who applied them has settings; one who never did has none).
  f.final_settings = api::FinalSettings();
  api::save_session_file(dir + "/d.lorq", f);
  const api::SessionFile d = api::load_session_file(dir + "/d.lorq");
  ASSERT_TRUE(d.final_settings.has_value());
  expect_same(*d.final_settings, api::FinalSettings());

  f.final_settings.reset();
  api::save_session_file(dir + "/n.lorq", f);
  EXPECT_FALSE(api::load_session_file(dir + "/n.lorq").final_settings.has_value());
  std::ifstream in(dir + "/n.lorq");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("\"final\""), std::string::npos) << text;
}

TEST(SessionFinalSettings, OldFilesWithoutFinalStillLoad) {
  const std::string dir = temp_dir("old");
  write(dir + "/v1.lorq", R"({"format": "lorq-session", "version": 1, "model": "m", "images": "i"})");
  write(dir + "/v2.lorq", R"({"format": "lorq-session", "version": 2, "model": "m", "images": "i",
                              "budget_bytes": 1000, "constraints": {}})");
  for (const char* name : {"/v1.lorq", "/v2.lorq"}) {
    const api::SessionFile f = api::load_session_file(dir + name);
    EXPECT_EQ(f.model_path, "m");
    EXPECT_FALSE(f.final_settings.has_value()) << name;
  }
  // A "final" object written before a field existed: the missing fields take their defaults.
  write(dir + "/partial.lorq", with_final(R"({"activation_bits": 8, "per_token_activations": true})"));
  const api::SessionFile p = api::load_session_file(dir + "/partial.lorq");
  ASSERT_TRUE(p.final_settings.has_value());
  api::FinalSettings expected;
  expected.activation_bits = 8;
  expected.per_token_activations = true;
  expect_same(*p.final_settings, expected);
}

TEST(SessionFinalSettings, MalformedValuesNameTheFileAndTheField) {
  const std::string dir = temp_dir("malformed");
  struct Case {
    std::string final, field, problem;
  };
  const Case cases[] = {
      {R"("A8")", "\"final\" must be an object", ""},
      {R"({"activation_bits": 5})", "\"final\".\"activation_bits\"", "must be 0, 4, 6 or 8 (got 5)"},
      {R"({"activation_bits": 16})", "\"final\".\"activation_bits\"", "between 0 and 8"},
      {R"({"activation_bits": "8"})", "\"final\".\"activation_bits\"", "must be an integer"},
      {R"({"activation_bits": 8.5})", "\"final\".\"activation_bits\"", "must be an integer"},
      {R"({"wads": 1, "activation_bits": 8})", "\"final\".\"wads\"", "must be true or false"},
      {R"({"recovery_steps": -3})", "\"final\".\"recovery_steps\"", "between 0 and"},
      {R"({"recovery_lr": 0})", "\"final\".\"recovery_lr\"", "must be a number > 0"},
      {R"({"recovery_lr": "fast"})", "\"final\".\"recovery_lr\"", "must be a number > 0"},
      {R"({"recovery_images": 0})", "\"final\".\"recovery_images\"", "between 1 and"},
      {R"({"round_iterations": 0})", "\"final\".\"round_iterations\"", "between 1 and"},
      {R"({"round_checkpoint": 3})", "\"final\".\"round_checkpoint\"", "must be a string"},
      // What finalize() refuses: per-token activations and WADS without activation bits.
      {R"({"per_token_activations": true})", "\"final\".\"per_token_activations\"", "needs \"activation_bits\""},
      {R"({"wads": true, "activation_bits": 0})", "\"final\".\"wads\"", "needs \"activation_bits\""},
  };
  int i = 0;
  for (const Case& c : cases) {
    const std::string path = dir + "/bad" + std::to_string(i++) + ".lorq";
    write(path, with_final(c.final));
    const std::string message = load_error(path);
    SCOPED_TRACE(c.final);
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(c.field), std::string::npos) << message;
    EXPECT_NE(message.find(c.problem), std::string::npos) << message;
  }
}
