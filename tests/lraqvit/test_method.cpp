// LRA-QViT end to end on the demo model: the result's size, and its export reloading bit-exact (weights only and
// with per-token activation quantization).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/lraqvit/lraqvit_export.h"
#include "lraqvit_test_util.h"

using namespace lorq;
using namespace lorq::lraqvit;
using namespace lorq::lraqvit_test;

namespace {

LraQvitSettings quick(int w_bits, int a_bits) {
  LraQvitSettings s;
  s.weight_bits = w_bits;
  s.act_bits = a_bits;
  s.distill.steps = 4;
  s.distill.batch = 4;
  s.wads_settings.steps = 5;
  s.wads_settings.images = 4;
  return s;
}

at::Tensor logits(Model& m, const at::Tensor& images) {
  c10::NoGradGuard no_grad;
  return m.forward(images).logits();
}

}  // namespace

TEST(LraQvit, ExportReloadsBitExact) {
  auto float_model = load_model(demo_model_dir());
  const at::Tensor calib = demo_images(*float_model, 16);
  const at::Tensor held_out = demo_images(*float_model, 8, 100);
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("lorq_lraqvit_" + std::to_string(::getpid()))).string();
  for (const auto& [w, a] : std::vector<std::pair<int, int>>{{8, 8}, {4, 0}, {6, 6}}) {
    const LraQvitResult r = run_lraqvit(*float_model, calib, {}, quick(w, a));
    ASSERT_EQ(r.layers.size(), float_model->linear_layers().size());
    int low_rank = 0;
    int64_t bytes = 0;
    for (const auto& c : r.layers) {
      low_rank += c.form == LayerForm::LowRank ? 1 : 0;
      bytes += c.option.bytes;
    }
    EXPECT_EQ(low_rank, 18);  // 6 blocks x {qkv, fc1, fc2}
    EXPECT_EQ(bytes, r.weight_bytes);
    EXPECT_EQ(lraqvit_weight_bytes(*float_model, RbLraSettings{}, w), r.weight_bytes);
    // r = k/2 on qkv/fc1/fc2 keeps 5/8, 5/8, 5/8 of them, proj, patch embedding and head are dense.
    EXPECT_LT(r.avg_bits(), 0.8 * w);
    EXPECT_GT(r.avg_bits(), 0.6 * w);
    EXPECT_EQ(r.wads.empty(), a == 0);
    const at::Tensor y = logits(*r.model, held_out);
    const at::Tensor y_float = logits(*float_model, held_out);
    EXPECT_GT(max_rel_diff(y, y_float), 0) << "nothing was compressed";
    export_lraqvit(dir, r, demo_model_dir(), {});
    auto reloaded = load_model(dir);
    EXPECT_TRUE(at::equal(logits(*reloaded, held_out), y)) << "W" << w << "A" << a;
    // The reloaded model quantizes activations exactly when the result did.
    bool any_override = false;
    for (const auto& l : reloaded->linear_layers())
      any_override = any_override || reloaded->has_linear_override(l.name);
    EXPECT_EQ(any_override, a > 0);
  }
  std::filesystem::remove_all(dir);
}

TEST(LraQvit, BadBitsAreClearErrors) {
  auto m = random_vit(1);
  const at::Tensor images = at::randn({2, 3, 32, 32});
  EXPECT_THROW(run_lraqvit(*m, images, {}, quick(9, 8)), Error);
  EXPECT_THROW(run_lraqvit(*m, images, {}, quick(8, 1)), Error);
}
