// Rounding each segment's layers together (the default RoundingScope::Segment) on the detector and the segmenter
// (../shared's random YOLOS and SegFormer checkpoints): their segments carry other states than a ViT's (detection
// tokens at the end of the sequence, several feature maps), and each segment's loss must still end below nearest
// rounding's with the model left as it was found.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "lorq/models/registry.h"
#include "lorq/quant/adaptive_rounding.h"
#include "shared_data.h"

using namespace lorq;

namespace {

// Every 2-d layer at 3 bits, nearest rounding; convolutions stay float.
std::vector<CompressedLayer> three_bit_layers(const Model& m) {
  std::vector<CompressedLayer> out;
  for (const LinearLayerInfo& info : m.linear_layers()) {
    CompressedLayer c;
    c.layer = info.name;
    c.form = LayerForm::Float;
    if (info.weight_shape.size() == 2) {
      const at::Tensor W = m.weight(info.name);
      c.form = LayerForm::Quant;
      c.option.kind = OptionKind::Quant;
      c.option.bits = 3;
      c.weight = QuantizedTensor::nearest(W, search_row_ranges(W, 3, RangeError::Plain));
    }
    out.push_back(c);
  }
  return out;
}

void expect_blocks_learned(const std::string& name, int64_t height, int64_t width) {
  const std::string dir = testdata::shared_path("models/" + name);
  LORQ_REQUIRE_SHARED_FILE(dir + "/model.safetensors");
  std::unique_ptr<Model> m = load_model(dir);
  const auto float_weights = m->named_tensors();
  std::vector<CompressedLayer> layers = three_bit_layers(*m);
  at::Generator g = at::detail::createCPUGenerator(8);
  const at::Tensor images = at::randn({6, 3, height, width}, g, at::kFloat);
  RoundingSettings s;
  s.iterations = 100;
  s.images = 6;
  s.augmented_views = 1;
  s.block_images_per_step = 4;
  s.batch = 5;  // batches that do not divide the 12 images
  s.keep_nearest_if_worse = false;
  const RoundingReport report = round_layers(*m, layers, images, s);
  int compressed = 0;
  for (const CompressedLayer& l : layers) compressed += l.form != LayerForm::Float;
  ASSERT_EQ(static_cast<int>(report.layers.size()), compressed) << name;
  int groups = 0, together = 0;
  for (size_t i = 0; i < report.layers.size(); i += report.layers[i].group, ++groups) {
    const LayerRoundingResult& r = report.layers[i];
    together += r.group > 1;
    EXPECT_LT(r.learned_error, r.nearest_error) << name << " " << r.layer << " (" << r.group << " layers)";
    std::printf("%s: %-40s %d layers, loss %.4g -> %.4g\n", name.c_str(), r.layer.c_str(), r.group, r.nearest_error,
                r.learned_error);
  }
  EXPECT_GT(together, 0) << name;
  for (const CompressedLayer& l : layers)
    if (l.form != LayerForm::Float) EXPECT_TRUE(l.rounding_learned) << name << " " << l.layer;
  for (const auto& [key, t] : float_weights) EXPECT_TRUE(at::equal(m->tensor(key), t)) << key;
  for (const auto& l : m->linear_layers()) EXPECT_FALSE(m->has_linear_override(l.name)) << l.name;
}

}  // namespace

TEST(SegmentRounding, YolosDetectionTokensAndEncoderLayers) { expect_blocks_learned("yolos_micro_random", 64, 96); }

TEST(SegmentRounding, SegformerStagesWithSeveralFeatureMaps) {
  expect_blocks_learned("segformer_micro_random", 64, 64);
}
