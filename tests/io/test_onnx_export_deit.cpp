// End to end on the real DeiT-Tiny (../shared): a compressed export at 4 and 3 average bits as ONNX, run in ONNX
// Runtime on ImageNet sample images the analysis did not calibrate on, against the product's own forward pass.
// A light analysis (16 calibration images, LFH on 4 x 16, the LFH estimate of the global error) keeps it to a
// few minutes: the point is the export's fidelity, not the allocation's quality.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/onnx_check.h"
#include "lorq/io/export.h"
#include "lorq/io/export_size.h"
#include "lorq/io/images.h"
#include "lorq/io/onnx_export.h"
#include "lorq/pipeline/compress.h"
#include "lorq/tasks/evaluate.h"
#include "shared_data.h"

using namespace lorq;

TEST(OnnxDeiT, RuntimeLogitsMatchTheProduct) {
  const std::string model_dir = testdata::shared_path("models/deit_tiny_patch16_224");
  const std::string images = testdata::shared_path("datasets/imagenet-sample-500/images");
  LORQ_REQUIRE_SHARED_FILE(model_dir + "/model.safetensors");
  LORQ_REQUIRE_SHARED_FILE(images);
  ASSERT_TRUE(onnx_export_available()) << "built without libonnx-dev";
  ASSERT_TRUE(std::filesystem::exists(testdata::ort_module_dir()))
      << "onnxruntime-node is not installed in " << LORQ_ORT_DIR << " (run scripts/setup)";
  init_threads();
  auto model = load_model(model_dir);
  ImageSet set = open_image_set(images);
  CompressSettings s;
  s.calibration.images = 16;
  s.lfh_images = 4;
  s.lfh.projections = 16;
  s.global_error.estimate = true;
  const CompressionAnalysis analysis = analyze_model(*model, set, s);
  const std::string dir = ::testing::TempDir() + "/lorq_onnx_deit";
  for (double bits : {4.0, 3.0}) {
    const std::string out = dir + "/w" + std::to_string(static_cast<int>(bits));
    std::filesystem::remove_all(out);
    const Allocation a = allocate(analysis, static_cast<int64_t>(bits / 8 * analysis.compressible_params));
    export_compressed(out, *model, model_dir, analysis, a);
    const OnnxExportSummary o = export_onnx(out, out + "/model.onnx");
    std::printf("DeiT-Tiny at %.0f average bits:\n%sONNX model: %lld bytes\n", bits,
                format_export_size(export_size_breakdown(out)).c_str(), static_cast<long long>(o.file_bytes));
    auto compressed = load_model(out);
    // Images 100..163: after the 16 calibration images.
    const ImageBatch batch = load_batch(set, 100, 164, compressed->preprocessing());
    const at::Tensor logits = compressed->forward(batch.images).logits();
    const testdata::OrtComparison r =
        testdata::compare_with_ort(out + "/model.onnx", batch.images, logits, batch.labels, out);
    EXPECT_LE(r.max_abs_diff_disabled, 1e-4 * std::max(1.0, r.max_abs_logit)) << bits << " bits";
    EXPECT_GE(r.top1_agree_disabled, r.images - 1) << bits << " bits";
  }
  std::filesystem::remove_all(dir);
}
