// The ONNX export of a compressed demo model, run in ONNX Runtime (onnxruntime-node) on the held-out demo images:
// with graph optimisations disabled the logits equal `lorq eval`'s on the same export up to float rounding.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "io/onnx_check.h"
#include "lorq/common/error.h"
#include "lorq/io/export.h"
#include "lorq/io/images.h"
#include "lorq/io/onnx_export.h"
#include "lorq/io/timm_export.h"
#include "lorq/pipeline/compress.h"
#include "lorq/quant/activation_quant.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/session/api.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

class OnnxDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    init_threads();
    demo_ = new api::DemoPaths(api::find_demo());
    auto model = load_model(demo_->model_dir);
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    CompressSettings s;
    s.calibration.images = 16;
    s.lfh_images = 4;
    s.lfh.projections = 16;
    s.global_error.anchors = 3;
    s.global_error.estimate = true;
    analysis_ = new CompressionAnalysis(analyze_model(*model, *set_, s));
    dir_ = ::testing::TempDir() + "/lorq_onnx_demo";
  }
  static void TearDownTestSuite() {
    delete analysis_;
    delete set_;
    delete demo_;
    std::filesystem::remove_all(dir_);
  }
  // Exports the allocation at `bits` average bits (mixing quantization and low rank) and its ONNX model.
  static std::string export_at(double bits, OnnxExportSummary* summary) {
    const std::string out = dir_ + "/w" + std::to_string(bits);
    std::filesystem::remove_all(out);
    auto model = load_model(demo_->model_dir);
    const Allocation a = allocate(*analysis_, static_cast<int64_t>(bits / 8 * analysis_->compressible_params));
    export_compressed(out, *model, demo_->model_dir, *analysis_, a);
    *summary = export_onnx(out, out + "/model.onnx");
    return out;
  }
  static api::DemoPaths* demo_;
  static ImageSet* set_;
  static CompressionAnalysis* analysis_;
  static std::string dir_;
};
api::DemoPaths* OnnxDemo::demo_ = nullptr;
ImageSet* OnnxDemo::set_ = nullptr;
CompressionAnalysis* OnnxDemo::analysis_ = nullptr;
std::string OnnxDemo::dir_;

TEST_F(OnnxDemo, RuntimeLogitsMatchTheProduct) {
  ASSERT_TRUE(onnx_export_available()) << "built without libonnx-dev";
  ASSERT_TRUE(std::filesystem::exists(testdata::ort_module_dir()))
      << "onnxruntime-node is not installed in " << LORQ_ORT_DIR << " (run scripts/setup)";
  for (double bits : {3.0, 4.0}) {
    OnnxExportSummary s;
    const std::string out = export_at(bits, &s);
    std::printf("%.0f average bits: ONNX %lld bytes, %d quantized + %d low-rank layers, UINT4 %lld B, UINT8 %lld B\n",
                bits, static_cast<long long>(s.file_bytes), s.quantized_layers, s.low_rank_layers,
                static_cast<long long>(s.uint4_bytes), static_cast<long long>(s.uint8_bytes));
    EXPECT_GT(s.quantized_layers + s.low_rank_layers, 0);
    EXPECT_EQ(s.file_bytes, static_cast<int64_t>(std::filesystem::file_size(out + "/model.onnx")));
    auto model = load_model(out);
    const ImageBatch batch = load_batch(*set_, 100, 164, model->preprocessing());
    const at::Tensor logits = model->forward(batch.images).logits();
    const testdata::OrtComparison r =
        testdata::compare_with_ort(out + "/model.onnx", batch.images, logits, batch.labels, out);
    // Same weights bit for bit; only the order of float sums (and x·Bᵀ·Aᵀ for low rank) differs.
    EXPECT_LE(r.max_abs_diff_disabled, 1e-4 * std::max(1.0, r.max_abs_logit)) << bits << " bits";
    EXPECT_GE(r.top1_agree_disabled, r.images - 1) << bits << " bits";
  }
}

TEST_F(OnnxDemo, BadInputIsANamedError) {
  if (!onnx_export_available()) GTEST_SKIP() << "built without libonnx-dev";
  try {
    export_onnx(demo_->model_dir, dir_ + "/x.onnx");  // a float checkpoint, not an export
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("lorq-config.json"), std::string::npos) << e.what();
  }
}

TEST_F(OnnxDemo, TimmCheckpointHoldsTheDequantizedWeights) {
  OnnxExportSummary s;
  const std::string out = export_at(3.0, &s);
  export_timm_checkpoint(out, out + "/timm");
  auto exported = load_model(out);
  auto timm = load_model(out + "/timm");
  for (const auto& [key, t] : exported->named_tensors()) EXPECT_TRUE(at::equal(timm->tensor(key), t)) << key;
  const at::Tensor x = at::randn({2, 3, 64, 64});
  EXPECT_TRUE(at::equal(timm->forward(x).logits(), exported->forward(x).logits()));
  SafetensorsFile f = SafetensorsFile::open(out + "/timm/model.safetensors");
  EXPECT_EQ(f.find("blocks.0.attn.qkv.weight.codes"), nullptr);
  EXPECT_EQ(f.at("patch_embed.proj.weight").shape.size(), 4u);  // timm's conv shape
}

TEST_F(OnnxDemo, ActivationQuantizersRunInTheRuntime) {
  ASSERT_TRUE(onnx_export_available()) << "built without libonnx-dev";
  ASSERT_TRUE(std::filesystem::exists(testdata::ort_module_dir()))
      << "onnxruntime-node is not installed in " << LORQ_ORT_DIR << " (run scripts/setup)";
  // A8: integer zero-points (QuantizeLinear/DequantizeLinear pairs) and log√2 softmax; A6: LayerNorm folding
  // makes fractional zero-points (elementary operators).
  for (int act_bits : {8, 6}) {
    auto model = load_model(demo_->model_dir);
    const at::Tensor calib = load_batch(*set_, 0, 16, model->preprocessing()).images;
    ActQuantSettings as;
    as.bits = act_bits;
    as.num_images = 16;
    const ActivationQuantization aq = quantize_activations(*model, calib, as);
    disable_activation_quantization(*model);
    const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 4).bytes);
    const auto layers = refit_layers(*model, *analysis_, a, analysis_->lfh);
    apply_compressed_layers(*model, layers);
    const std::string out = dir_ + "/a" + std::to_string(act_bits);
    std::filesystem::remove_all(out);
    export_compressed(out, *model, demo_->model_dir, *analysis_, a, layers, &aq);
    const OnnxExportSummary s = export_onnx(out, out + "/model.onnx");
    std::printf("W4A%d: %d quantizer pairs, %d in elementary operators\n", act_bits, s.activation_qdq,
                s.activation_elementwise);
    EXPECT_EQ(s.activation_qdq + s.activation_elementwise, static_cast<int>(aq.quantizers.size()));
    EXPECT_GT(act_bits == 8 ? s.activation_qdq : s.activation_elementwise, 0);
    auto loaded = load_model(out);
    ASSERT_TRUE(loaded->has_activation_hooks());
    const ImageBatch batch = load_batch(*set_, 100, 164, loaded->preprocessing());
    const at::Tensor logits = loaded->forward(batch.images).logits();
    const testdata::OrtComparison r =
        testdata::compare_with_ort(out + "/model.onnx", batch.images, logits, batch.labels, out);
    // Same arithmetic, but an activation that float rounding puts on the other side of a rounding boundary moves
    // by one quantization step: agreement, not equality, is what holds.
    EXPECT_GE(r.top1_agree_disabled, r.images - 2) << "A" << act_bits;
    EXPECT_LE(r.max_abs_diff_disabled, 0.1 * std::max(1.0, r.max_abs_logit)) << "A" << act_bits;
  }
}
