// Calibration and global error (spec §3, §6) on a small random ViT and generated images.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "lorq/pipeline/calibration.h"
#include "lorq/common/error.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/models/vit.h"

using namespace lorq;

namespace {

std::unique_ptr<VisionTransformer> small_model() {
  VitConfig c;
  c.embed_dim = 32;
  c.num_heads = 2;
  c.depth = 3;
  c.img_size = 64;
  c.patch_size = 16;
  c.num_classes = 6;
  c.preprocessing.input_height = c.preprocessing.input_width = 64;
  c.preprocessing.crop_pct = 1.0;
  auto m = VisionTransformer::create_random(c, 21);
  for (const auto& l : m->linear_layers()) m->set_weight(l.name, m->weight(l.name) * 10);
  return m;
}

ImageSet shapes(int count) {
  const std::string dir = ::testing::TempDir() + "/global_error_shapes";
  ShapesDatasetSpec spec;
  spec.count = count;
  write_shapes_dataset(dir, spec);
  return open_image_folder(dir + "/images");
}

}  // namespace

TEST(GlobalError, AnchorPositionsRoundHalfToEven) {
  EXPECT_EQ(anchor_positions(7, 5), (std::vector<size_t>{0, 2, 3, 4, 6}));  // the spec's example
  EXPECT_EQ(anchor_positions(3, 5), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(anchor_positions(11, 5), (std::vector<size_t>{0, 2, 5, 8, 10}));  // 2.5 -> 2, 7.5 -> 8
  EXPECT_TRUE(anchor_positions(0, 5).empty());
}

TEST(GlobalError, CalibrationCachesStageInputsAndReference) {
  auto m = small_model();
  ImageSet set = shapes(10);
  CalibrationSettings s;
  s.images = 7;
  s.batch = 3;
  Calibration c = calibrate(*m, set, s);
  ASSERT_EQ(c.files.size(), 7u);
  ASSERT_EQ(c.stage_inputs.size(), 3u);
  EXPECT_EQ(c.stage_inputs[1].at(0).size(0), 7);
  at::Tensor direct = m->forward(c.images).logits();
  EXPECT_TRUE(at::allclose(direct, c.reference.logits(), 1e-5, 1e-6));
  EXPECT_TRUE(at::allclose(m->run_from(2, c.stage_inputs[2]).logits(), c.reference.logits(), 1e-5, 1e-6));

  // More images asked than exist: all are used, with a warning.
  s.images = 50;
  Calibration all = calibrate(*m, set, s);
  EXPECT_EQ(all.files.size(), 10u);
  EXPECT_FALSE(all.warnings.empty());
  // The draw is seeded: the same seed gives the same subset, another seed another one.
  s.images = 5;
  EXPECT_EQ(calibrate(*m, set, s).files, calibrate(*m, set, s).files);
  CalibrationSettings other = s;
  other.seed = 99;
  EXPECT_NE(calibrate(*m, set, s).files, calibrate(*m, set, other).files);
}

TEST(GlobalError, NsrIsZeroForTheFloatWeightAndMatchesADirectRun) {
  auto m = small_model();
  ImageSet set = shapes(8);
  CalibrationSettings s;
  s.images = 8;
  s.batch = 3;
  Calibration c = calibrate(*m, set, s);
  for (const auto& l : m->linear_layers()) EXPECT_NEAR(output_nsr(*m, c, l.name, m->weight(l.name), 3), 0, 1e-10);
  // Against a full forward pass with the weight really replaced (spec §6.1 over equal-sized batches: use 4+4).
  const std::string layer = "blocks.1.mlp.fc1";
  at::Tensor Wt = m->weight(layer) + at::randn_like(m->weight(layer)) * 0.05;
  const double fast = output_nsr(*m, c, layer, Wt, 4);
  at::Tensor W = m->weight(layer);
  m->set_weight(layer, Wt);
  at::Tensor y = m->forward(c.images).logits();
  m->set_weight(layer, W);
  const at::Tensor ref = c.reference.logits();
  const double want = ((y.slice(0, 0, 4) - ref.slice(0, 0, 4)).pow(2).mean().item<double>() +
                       (y.slice(0, 4, 8) - ref.slice(0, 4, 8)).pow(2).mean().item<double>()) /
                      (ref.slice(0, 0, 4).pow(2).mean().item<double>() + ref.slice(0, 4, 8).pow(2).mean().item<double>());
  EXPECT_GT(want, 0);
  EXPECT_NEAR(fast, want, 1e-6 * want);
  EXPECT_FALSE(m->has_linear_override(layer));
}

TEST(GlobalError, AnchorsMeasuredOthersInterpolatedInLocalLoss) {
  auto m = small_model();
  ImageSet set = shapes(6);
  CalibrationSettings s;
  s.images = 6;
  Calibration c = calibrate(*m, set, s);
  std::vector<LayerCandidates> layers;
  for (const auto& l : m->linear_layers())
    layers.push_back(build_layer_candidates(l.name, m->weight(l.name), {}, l.low_rank_allowed));
  GlobalErrorSettings g;
  g.anchors = 3;
  measure_global_errors(*m, c, layers, g);
  int interpolated = 0;
  for (const auto& lc : layers) {
    for (const auto& o : lc.options) {
      ASSERT_GE(o.error, 0) << lc.layer << " " << o.label();
      if (o.measured) {
        EXPECT_NEAR(o.error, output_nsr(*m, c, lc.layer, compressed_weight(lc, o, m->weight(lc.layer))),
                    1e-9 + 1e-6 * o.error);
      } else {
        ++interpolated;
        // Between its neighbouring anchors of the same bit pair.
        double lo = 1e30, hi = -1;
        for (const auto& p : lc.options)
          if (p.measured && p.kind == OptionKind::LowRank && p.bits_a == o.bits_a && p.bits_b == o.bits_b) {
            lo = std::min(lo, p.error);
            hi = std::max(hi, p.error);
          }
        EXPECT_GE(o.error, lo - 1e-12);
        EXPECT_LE(o.error, hi + 1e-12);
      }
    }
  }
  EXPECT_GT(interpolated, 0);
}

TEST(GlobalError, StageInputsBeyondTheMemoryAllowanceAreRecomputedExactly) {
  auto m = small_model();
  ImageSet set = shapes(9);
  CalibrationSettings s;
  s.images = 9;
  s.batch = 4;
  const Calibration full = calibrate(*m, set, s);
  s.max_stage_bytes = 1;  // room for one stage: only stage 0 is kept
  const Calibration lean = calibrate(*m, set, s);
  ASSERT_EQ(lean.stage_inputs.size(), 3u);
  EXPECT_FALSE(lean.stage_inputs[0].empty());
  EXPECT_TRUE(lean.stage_inputs[1].empty());
  EXPECT_TRUE(lean.stage_inputs[2].empty());
  EXPECT_FALSE(lean.warnings.empty());
  // In order, out of order and repeated: always the same tensor as the fully cached calibration.
  for (int st : {1, 2, 2, 1, 0, 2})
    EXPECT_TRUE(at::equal(lean.stage_input(*m, st).at(0), full.stage_input(*m, st).at(0))) << "stage " << st;
  for (const auto& l : m->linear_layers()) {
    const at::Tensor Wt = m->weight(l.name) * 0.9;
    EXPECT_EQ(output_nsr(*m, lean, l.name, Wt, 4), output_nsr(*m, full, l.name, Wt, 4)) << l.name;
  }
  EXPECT_THROW(lean.stage_input(*m, 3), Error);
}

// Several options of a layer measured in one pass (each on its own copy of the batch) give each option's own NSR,
// whatever the grouping: 7 options in passes of 1, 2 (the last pass odd), 3 and all 7; batches of 3 over 8 images
// (a short last batch); every layer, the embedding's (run from the images) included.
TEST(GlobalError, OptionsMeasuredTogetherEqualEachMeasuredAlone) {
  auto m = small_model();
  ImageSet set = shapes(8);
  CalibrationSettings s;
  s.images = 8;
  s.batch = 3;
  Calibration c = calibrate(*m, set, s);
  for (const auto& l : m->linear_layers()) {
    const at::Tensor W = m->weight(l.name);
    std::vector<at::Tensor> Wts;
    for (int i = 0; i < 7; ++i) Wts.push_back(W + at::randn_like(W) * (0.01 * (i + 1)));
    std::vector<double> alone;
    for (const at::Tensor& Wt : Wts) alone.push_back(output_nsr(*m, c, l.name, Wt, 3));
    const int64_t batch_bytes = state_bytes(slice_batch(c.stage_input(*m, std::max(l.stage, 0)), 0, 3));
    EXPECT_EQ(output_nsrs(*m, c, l.name, Wts, 3, 0), alone);  // one per pass: exactly output_nsr
    for (int64_t per_pass : {1, 2, 3, 7}) {
      const std::vector<double> together = output_nsrs(*m, c, l.name, Wts, 3, per_pass * batch_bytes);
      ASSERT_EQ(together.size(), Wts.size());
      for (size_t i = 0; i < Wts.size(); ++i)
        // The bigger GEMMs round differently: relative differences of a few 1e-6 (measured up to 7e-6 on DeiT).
        EXPECT_NEAR(together[i], alone[i], 2e-5 * alone[i]) << l.name << " option " << i << " per pass " << per_pass;
    }
    EXPECT_FALSE(m->has_linear_override(l.name));
  }
}
