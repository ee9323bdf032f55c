// Calibrated global errors (GlobalErrorSettings::calibrated) on the embedded demo, against the two analyses they
// combine: the options they measure have exactly the errors of measuring every anchor, and every other anchor is
// its LFH estimate times its source's measured/estimated ratio (Q options wider than 4 bits: the widest measured Q;
// low-rank anchors: their bit pair's middle rank), with fewer options measured in all.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <map>

#include "lorq/io/images.h"
#include "lorq/pipeline/compress.h"
#include "lorq/session/api.h"

using namespace lorq;

namespace {

CompressSettings settings(bool calibrated, bool estimate) {
  CompressSettings s;
  s.calibration.images = 12;
  s.lfh_images = 2;
  s.lfh.projections = 8;
  s.global_error.anchors = 3;
  s.global_error.calibrated = calibrated;
  s.global_error.estimate = estimate;
  return s;
}

// The option of `l` with this kind, bits and rank.
const LayerOption* find(const LayerCandidates& l, const LayerOption& like) {
  for (const LayerOption& o : l.options)
    if (o.kind == like.kind && o.bits == like.bits && o.bits_a == like.bits_a && o.bits_b == like.bits_b &&
        o.rank == like.rank)
      return &o;
  return nullptr;
}

}  // namespace

TEST(CalibratedErrors, MeasuredWhereItMeasuresAndScaledEstimatesElsewhere) {
  api::init_engine();  // one OpenBLAS thread: the measured errors are then bit-reproducible
  const api::DemoPaths demo = api::find_demo();
  ASSERT_FALSE(demo.model_dir.empty());
  auto model = load_model(demo.model_dir);
  const ImageSet set = open_labels_csv(demo.labels_csv);
  const CompressionAnalysis all = analyze_model(*model, set, settings(false, false));
  const CompressionAnalysis cal = analyze_model(*model, set, settings(true, false));
  const CompressionAnalysis est = analyze_model(*model, set, settings(false, true));
  ASSERT_EQ(cal.layers.size(), all.layers.size());
  int measured_all = 0, measured_cal = 0, scaled_q = 0, scaled_lr = 0;
  for (size_t i = 0; i < cal.layers.size(); ++i) {
    const LayerCandidates &c = cal.layers[i], &a = all.layers[i], &e = est.layers[i];
    ASSERT_EQ(c.options.size(), a.options.size()) << c.layer;
    EXPECT_TRUE(c.errors_measured);
    for (const LayerOption& o : a.options) measured_all += o.measured;
    // The widest measured Q option and each pair's middle anchor: the sources of the scaled ones.
    const LayerOption* widest = nullptr;
    std::map<std::pair<int, int>, std::vector<const LayerOption*>> anchors;
    for (const LayerOption& o : a.options) {
      if (!o.measured) continue;
      if (o.kind == OptionKind::Quant && o.bits <= 4 && (!widest || o.bits > widest->bits)) widest = &o;
      if (o.kind != OptionKind::Quant) anchors[{o.bits_a, o.bits_b}].push_back(&o);
    }
    for (size_t j = 0; j < c.options.size(); ++j) {
      const LayerOption& o = c.options[j];
      measured_cal += o.measured;
      if (!a.options[j].measured) continue;  // interpolated between anchors in both
      if (o.measured) {
        EXPECT_EQ(o.error, a.options[j].error) << c.layer << " " << o.label();
        continue;
      }
      ASSERT_TRUE(c.low_rank_allowed) << c.layer << ": a layer without an LFH is measured whole";
      const LayerOption* source = nullptr;
      if (o.kind == OptionKind::Quant) {
        ASSERT_GT(o.bits, 4) << c.layer;
        source = widest;
        ++scaled_q;
      } else {
        auto& pair = anchors.at({o.bits_a, o.bits_b});
        std::sort(pair.begin(), pair.end(), [](auto* x, auto* y) { return x->rank < y->rank; });
        source = pair[pair.size() / 2];
        ++scaled_lr;
      }
      ASSERT_NE(source, nullptr);
      const double ratio = source->error / find(e, *source)->error;
      EXPECT_NEAR(o.error, find(e, o)->error * ratio, 1e-9 * std::max(1e-12, o.error)) << c.layer << " " << o.label();
    }
  }
  // The progressive analysis (the workbench's and the CLI's: estimates first, then each layer measured) calibrates
  // the same way.
  int revisions = 0;
  const CompressionAnalysis progressive =
      analyze_model(*model, set, settings(true, false), {}, nullptr, [&](const CompressionAnalysis&) { ++revisions; });
  EXPECT_GT(revisions, 1);
  for (size_t i = 0; i < cal.layers.size(); ++i)
    for (size_t j = 0; j < cal.layers[i].options.size(); ++j) {
      EXPECT_EQ(progressive.layers[i].options[j].error, cal.layers[i].options[j].error) << cal.layers[i].layer;
      EXPECT_EQ(progressive.layers[i].options[j].measured, cal.layers[i].options[j].measured);
    }
  EXPECT_GT(scaled_q, 0);
  EXPECT_GT(scaled_lr, 0);
  EXPECT_LT(measured_cal, measured_all * 3 / 4) << measured_cal << " of " << measured_all;
}
