// Error-compensating quantization inside the weight pipeline, on the embedded demo (fast settings): the layers'
// input moments, compensated codes for every option where the moment is usable, output errors on the calibration
// inputs never above nearest rounding's, lower global errors than nearest at low bit widths, the exported layers
// equal to what the global error measured, and the session cache keeping the compensated values under its own key.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "lorq/io/images.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/cross_fit.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/session/api.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

CompressSettings fast_settings(Quantizer q) {
  CompressSettings s;
  s.calibration.images = 16;
  s.lfh_images = 2;
  s.lfh.projections = 8;
  s.global_error.anchors = 2;
  s.candidates.quantizer = q;
  return s;
}

class GptqDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    init_threads();
    demo_ = new api::DemoPaths(api::find_demo());
    ASSERT_FALSE(demo_->model_dir.empty());
    model_ = load_model(demo_->model_dir).release();
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    gptq_ = new CompressionAnalysis(analyze_model(*model_, *set_, fast_settings(Quantizer::Gptq)));
    nearest_ = new CompressionAnalysis(analyze_model(*model_, *set_, fast_settings(Quantizer::Nearest)));
  }
  static void TearDownTestSuite() {
    delete gptq_;
    delete nearest_;
    delete set_;
    delete model_;
    delete demo_;
  }
  // The calibration images the analysis used, preprocessed.
  static at::Tensor calibration_images(const CompressionAnalysis& a) {
    ImageSet s;
    for (const auto& f : a.calibration_files) s.items.push_back({f, -1});
    return load_batch(s, 0, s.size(), model_->preprocessing(), 2).images;
  }
  static api::DemoPaths* demo_;
  static Model* model_;
  static ImageSet* set_;
  static CompressionAnalysis *gptq_, *nearest_;
};
api::DemoPaths* GptqDemo::demo_ = nullptr;
Model* GptqDemo::model_ = nullptr;
ImageSet* GptqDemo::set_ = nullptr;
CompressionAnalysis* GptqDemo::gptq_ = nullptr;
CompressionAnalysis* GptqDemo::nearest_ = nullptr;

}  // namespace

TEST_F(GptqDemo, InputMomentsMatchTheLayerInputs) {
  const at::Tensor images = calibration_images(*gptq_);
  const auto moments = layer_input_moments(*model_, images, 5);  // batches of 5: the sums must not depend on it
  // One layer's inputs watched directly: Σ x xᵀ over every token of every image.
  const std::string layer = "blocks.1.mlp.fc2";
  at::Tensor xtx = at::zeros({model_->layer(layer).in_features, model_->layer(layer).in_features}, at::kDouble);
  int64_t rows = 0;
  model_->set_observer({layer}, [&](const std::string&, const at::Tensor& in, const at::Tensor&) {
    const at::Tensor x = in.reshape({-1, in.size(-1)}).to(at::kDouble);
    xtx += at::mm(x.t(), x);
    rows += x.size(0);
  });
  model_->forward(images);
  model_->clear_observer();
  EXPECT_EQ(moments.at(layer).rows, rows);
  EXPECT_TRUE(at::allclose(moments.at(layer).xtx, xtx, 1e-4, 1e-3 * xtx.abs().max().item<double>()));
  // The classifier sees one pooled row per image: fewer rows than inputs, so no compensation there.
  EXPECT_EQ(moments.at("head").rows, images.size(0));
  EXPECT_FALSE(compensation_moment(moments, "head").defined());
  for (const auto& l : model_->linear_layers())
    EXPECT_EQ(compensation_moment(moments, l.name).defined(), moments.at(l.name).rows >= l.in_features) << l.name;
}

TEST_F(GptqDemo, CompensatedOptionsNeverWorseOnCalibrationInputs) {
  const auto moments = layer_input_moments(*model_, calibration_images(*gptq_));
  int compensated_layers = 0;
  size_t compensated_tensors = 0;
  for (size_t i = 0; i < gptq_->layers.size(); ++i) {
    const LayerCandidates& g = gptq_->layers[i];
    const LayerCandidates& n = nearest_->layers[i];
    EXPECT_TRUE(n.weight_values.empty() && n.a_values.empty() && n.b_values.empty()) << n.layer;
    const at::Tensor H = compensation_moment(moments, g.layer);
    if (!H.defined()) {
      EXPECT_TRUE(g.weight_values.empty()) << g.layer;
      continue;
    }
    ++compensated_layers;
    const at::Tensor W = model_->weight(g.layer);
    for (int b : {2, 3, 4, 6, 8}) {
      // (A bit width without values lost its compensation to the cross-fitted test: nearest rounding.)
      const LayerOption* o = nullptr;
      for (const auto& opt : g.options)
        if (opt.kind == OptionKind::Quant && opt.bits == b) o = &opt;
      ASSERT_NE(o, nullptr);
      EXPECT_LE(output_error(W, compressed_weight(g, *o, W), H),
                output_error(W, fake_quantize_rows(W, g.weight_params.at(b)), H))
          << g.layer << " Q" << b;
    }
    if (g.low_rank_allowed) {
      EXPECT_LE(g.a_values.size(), 9u) << g.layer;
    }
    compensated_tensors += g.weight_values.size() + g.a_values.size() + g.b_values.size();
  }
  // Every layer with at least as many input rows as features (the demo's 64x64 images give 17 tokens each, so the
  // MLP's wide fc2 and the classifier are rounded to nearest).
  EXPECT_GE(compensated_layers, static_cast<int>(gptq_->layers.size()) / 2);
  EXPECT_GT(compensated_tensors, 0u);
}

TEST_F(GptqDemo, CrossFittedErrorsAreAboveTheInSampleOnes) {
  // The analysis measures each compensated option on the calibration half it was not fitted to. Measured instead
  // on all calibration images (which the exported values were fitted to), the low-bit options look better: the
  // bias the cross-fit removes.
  const CompressSettings s = fast_settings(Quantizer::Gptq);
  const Calibration calib = calibrate(*model_, *set_, s.calibration);
  std::vector<LayerCandidates> in_sample = gptq_->layers;
  measure_global_errors(*model_, calib, in_sample, s.global_error);
  double cross = 0, same = 0;
  int options = 0;
  for (size_t i = 0; i < in_sample.size(); ++i)
    for (size_t j = 0; j < in_sample[i].options.size(); ++j) {
      const LayerOption& o = in_sample[i].options[j];
      if (o.kind != OptionKind::Quant || o.bits > 3 || !in_sample[i].weight_values.count(o.bits)) continue;
      same += o.error;
      cross += gptq_->layers[i].options[j].error;
      ++options;
    }
  ASSERT_GT(options, 0);
  EXPECT_GT(cross, same);
  // Cross-fitted errors are measured ones, and the analysis says so (the workbench's "global errors: measured").
  EXPECT_EQ(gptq_->layers_measured(), static_cast<int>(gptq_->layers.size()));
  // The folds are the calibration images' two halves, with the float reference of exactly those images.
  const Calibration fold = calibration_fold(calib, 3, 9);
  ASSERT_EQ(fold.images.size(0), 6);
  EXPECT_TRUE(at::equal(fold.images, calib.images.slice(0, 3, 9)));
  EXPECT_TRUE(at::equal(fold.reference.logits(), calib.reference.logits().slice(0, 3, 9)));
  EXPECT_EQ(fold.files.front(), calib.files[3]);
}

TEST_F(GptqDemo, LowBitGlobalErrorsBelowNearest) {
  // Same LFH, same grids: the global errors (network output NSR) of the low-bit Q options summed over layers.
  for (int b : {2, 3}) {
    double g = 0, n = 0;
    for (size_t i = 0; i < gptq_->layers.size(); ++i)
      for (size_t j = 0; j < gptq_->layers[i].options.size(); ++j) {
        const LayerOption& o = gptq_->layers[i].options[j];
        if (o.kind != OptionKind::Quant || o.bits != b) continue;
        g += o.error;
        for (const auto& on : nearest_->layers[i].options)
          if (on.kind == OptionKind::Quant && on.bits == b) n += on.error;
      }
    EXPECT_LT(g, 0.8 * n) << "Q" << b;
  }
}

TEST_F(GptqDemo, ExportedLayersAreTheMeasuredOnesAndStartRoundingFromThem) {
  const Allocation alloc = allocate(*gptq_, static_cast<int64_t>(3.0 * gptq_->compressible_params / 8));
  const auto layers = compress_layers(*model_, *gptq_, alloc);
  for (size_t i = 0; i < layers.size(); ++i) {
    const CompressedLayer& c = layers[i];
    if (c.form == LayerForm::Float) continue;
    const LayerCandidates& l = gptq_->layers[i];
    EXPECT_TRUE(at::equal(c.dequantized_weight(), compressed_weight(l, c.option, model_->weight(l.layer)))) << l.layer;
    // The values are the compensated ones: nearest rounding of them is the codes (adaptive rounding's start).
    for (const QuantizedTensor* q : {&c.weight, &c.a, &c.b}) {
      if (q->codes.defined()) {
        EXPECT_TRUE(at::equal(q->codes, quantize_rows_to_codes(q->values, q->params)));
      }
    }
    if (c.form == LayerForm::Quant && l.weight_values.count(c.option.bits)) {
      EXPECT_TRUE(at::equal(c.weight.values, l.weight_values.at(c.option.bits))) << l.layer;
    }
  }
}

TEST_F(GptqDemo, SessionCacheKeepsCompensatedValuesUnderItsOwnKey) {
  const std::string dir = (std::filesystem::temp_directory_path() / "lorq-test-gptq-cache").string();
  std::filesystem::remove_all(dir);
  SessionCache cg(dir, demo_->model_dir, *set_, fast_settings(Quantizer::Gptq));
  SessionCache cn(dir, demo_->model_dir, *set_, fast_settings(Quantizer::Nearest));
  EXPECT_NE(cg.key(), cn.key());
  cg.save_analysis(*gptq_, true);
  CompressionAnalysis back;
  ASSERT_TRUE(cg.load_analysis(true, &back, nullptr));
  CompressionAnalysis other;
  EXPECT_FALSE(cn.load_analysis(true, &other, nullptr));
  ASSERT_EQ(back.layers.size(), gptq_->layers.size());
  for (size_t i = 0; i < back.layers.size(); ++i) {
    const LayerCandidates &a = gptq_->layers[i], &b = back.layers[i];
    EXPECT_EQ(a.weight_values.size(), b.weight_values.size());
    EXPECT_EQ(a.a_values.size(), b.a_values.size());
    EXPECT_EQ(a.b_values.size(), b.b_values.size());
    const at::Tensor W = model_->weight(a.layer);
    for (size_t j = 0; j < a.options.size(); ++j)
      EXPECT_TRUE(at::equal(compressed_weight(a, a.options[j], W), compressed_weight(b, b.options[j], W)))
          << a.layer << " " << a.options[j].label();
  }
  std::filesystem::remove_all(dir);
}
