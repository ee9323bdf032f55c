// Adaptive rounding end to end on the real DeiT-Tiny and the ImageNet sample (../shared): at 3 average bits, the
// learned rounding (CPU defaults) beats nearest rounding of the same allocation on held-out top-1, and the export
// carries the learned codes. The analysis uses the LFH estimate of the global error to keep the test near 15-20
// minutes here; rounding images are the analysis' 32 calibration images plus the next ones, and every image used
// for either is excluded from the evaluation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "lorq/quant/adaptive_rounding.h"
#include "lorq/pipeline/compress.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/io/export.h"
#include "lorq/pipeline/final_model.h"
#include "shared_data.h"

using namespace lorq;

class DeiTRounding : public ::testing::Test {
 protected:
  void SetUp() override {
    model_dir_ = testdata::shared_path("models/deit_tiny_patch16_224");
    images_dir_ = testdata::shared_path("datasets/imagenet-sample-500/images");
    LORQ_REQUIRE_SHARED_FILE(model_dir_ + "/model.safetensors");
    LORQ_REQUIRE_SHARED_FILE(images_dir_);
  }
  std::string model_dir_, images_dir_;
};

TEST_F(DeiTRounding, BeatsNearestRoundingOnHeldOutImagesAtThreeBits) {
  init_threads();
  auto model = load_model(model_dir_);
  const ImageSet set = open_image_set(images_dir_, "", model->label_names());
  CompressSettings cs;
  cs.global_error.estimate = true;
  const CompressionAnalysis analysis = analyze_model(*model, set, cs);
  const Allocation allocation = allocate(analysis, uniform_allocation(analysis, 3).bytes);

  const RoundingSettings rs;  // the CPU defaults
  const FinalImages split = split_final_images(set, analysis.calibration_files, static_cast<size_t>(rs.images));
  const ImageSet& rounding_set = split.train;
  const ImageSet& held_out = split.held_out;
  const at::Tensor images = load_batch(rounding_set, 0, rounding_set.size(), model->preprocessing(), 2).images;
  ASSERT_EQ(images.size(0), rs.images);

  const std::vector<CompressedLayer> nearest = compress_layers(*model, analysis, allocation);
  std::vector<CompressedLayer> rounded = nearest;
  const RoundingReport report = round_layers(*model, rounded, images, rs);
  ASSERT_EQ(report.layers.size(), rounded.size());
  int kept = 0;
  for (const auto& r : report.layers) kept += r.kept_nearest ? 1 : 0;

  const double fp = evaluate(*model, held_out, {}).top1_pct();
  auto m = load_model(model_dir_);
  apply_compressed_layers(*m, nearest);
  const double tn = evaluate(*m, held_out, {}).top1_pct();
  apply_compressed_layers(*m, rounded);
  const double tr = evaluate(*m, held_out, {}).top1_pct();
  std::printf(
      "DeiT-Tiny at 3 average bits, %zu held-out images: float %.2f%%, nearest %.2f%%, rounded %.2f%% "
      "(rounding %.0f s, %d of %zu layers kept nearest)\n",
      held_out.size(), fp, tn, tr, report.seconds, kept, report.layers.size());
  EXPECT_GT(tr, tn);

  // The export writes the learned codes: loading it gives the rounded model.
  const std::string out = ::testing::TempDir() + "/lorq_deit_rounded_export";
  std::filesystem::remove_all(out);
  export_compressed(out, *model, model_dir_, analysis, allocation, rounded);
  auto loaded = load_model(out);
  const at::Tensor x = images.slice(0, 0, 2);
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), m->forward(x).logits()));
  std::filesystem::remove_all(out);
}
