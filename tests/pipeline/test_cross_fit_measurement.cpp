// The cross-fitted measurement runs both folds in one pass (each image through its own fold's weights): its errors
// equal measuring each fold's fit on the other fold's images alone and averaging by images, up to float rounding,
// with an odd number of images and a batch that splits the folds unevenly, the measured/interpolated flags the same,
// and one layer measured alone equal to the whole run.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cmath>

#include "lorq/io/images.h"
#include "lorq/models/registry.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/pipeline/cross_fit.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/session/api.h"

using namespace lorq;

namespace {

struct DemoAnalysis {
  std::unique_ptr<Model> model;
  Calibration calib;
  std::map<std::string, at::Tensor> lfh;
  std::vector<LayerCandidates> layers;
};

DemoAnalysis make_setup(int images, int batch) {
  api::init_engine();
  at::set_num_threads(1);
  const api::DemoPaths demo = api::find_demo();
  EXPECT_FALSE(demo.model_dir.empty()) << "the embedded demo (datasets/) was not found";
  DemoAnalysis s;
  s.model = load_model(demo.model_dir);
  const ImageSet set = open_labels_csv(demo.labels_csv);
  CalibrationSettings cs;
  cs.images = images;
  cs.batch = batch;
  s.calib = calibrate(*s.model, set, cs);
  LfhOptions lo;
  lo.projections = 8;
  s.lfh = label_free_hessian(*s.model, s.calib.images.slice(0, 0, 2), lo);
  CandidateSettings c;
  c.quantizer = Quantizer::Gptq;
  const auto moments = layer_input_moments(*s.model, s.calib.images, batch);
  for (const auto& l : s.model->linear_layers())
    s.layers.push_back(build_layer_candidates(l.name, s.model->weight(l.name), s.lfh.at(l.name), l.low_rank_allowed, c,
                                              compensation_moment(moments, l.name)));
  return s;
}

}  // namespace

TEST(CrossFitMeasurement, BothFoldsInOnePassEqualEachFoldAlone) {
  DemoAnalysis s = make_setup(15, 4);  // folds of 8 and 7 images: batches 4+4 and 4+3
  ASSERT_EQ(s.calib.images.size(0), 15);
  for (bool calibrated : {false, true}) {
    GlobalErrorSettings gs;
    gs.batch = 4;
    gs.anchors = 2;
    gs.calibrated = calibrated;
    std::vector<LayerCandidates> layers = s.layers;
    CrossFit fit = cross_fit_candidates(*s.model, s.calib, layers, GptqSettings(), {}, nullptr, &s.lfh);
    ASSERT_EQ(fit.bounds, (std::vector<int64_t>{0, 8, 15}));
    int differing = 0;  // layers whose two fits differ: the pass really mixes two weights
    for (size_t i = 0; i < layers.size(); ++i)
      for (const auto& [bits, v] : fit.folds[0][i].weight_values)
        differing += fit.folds[1][i].weight_values.count(bits) && !at::equal(v, fit.folds[1][i].weight_values.at(bits));
    EXPECT_GT(differing, 0);

    // The reference: each fold's fit measured alone on the other fold's images, averaged by images.
    std::vector<LayerCandidates> reference = layers;
    std::vector<std::vector<double>> expected(layers.size());
    for (int k = 0; k < 2; ++k) {
      const Calibration held_out = calibration_fold(s.calib, fit.bounds[1 - k], fit.bounds[2 - k]);
      const double weight = double(held_out.images.size(0)) / 15.0;
      std::vector<LayerCandidates> fold = fit.folds[k];
      measure_global_errors(*s.model, held_out, fold, gs, {}, &s.lfh);
      for (size_t i = 0; i < layers.size(); ++i) {
        expected[i].resize(layers[i].options.size(), 0.0);
        for (size_t j = 0; j < layers[i].options.size(); ++j) {
          expected[i][j] += weight * fold[i].options[j].error;
          reference[i].options[j].measured = fold[i].options[j].measured;
        }
      }
    }
    // One layer alone (the transformer block's first layer) before the whole run consumes the fit.
    const size_t one = 1;
    LayerCandidates alone = layers[one];
    measure_cross_fitted_layer(*s.model, s.calib, alone, one, fit, gs, &s.lfh);
    measure_cross_fitted(*s.model, s.calib, layers, std::move(fit), gs, {}, &s.lfh);
    for (size_t i = 0; i < layers.size(); ++i) {
      EXPECT_TRUE(layers[i].errors_measured);
      for (size_t j = 0; j < layers[i].options.size(); ++j) {
        const double e = expected[i][j];
        EXPECT_NEAR(layers[i].options[j].error, e, 1e-4 * std::abs(e) + 1e-9)
            << layers[i].layer << " " << layers[i].options[j].label() << (calibrated ? " calibrated" : "");
        EXPECT_EQ(layers[i].options[j].measured, reference[i].options[j].measured) << layers[i].layer;
      }
    }
    for (size_t j = 0; j < alone.options.size(); ++j)
      EXPECT_EQ(alone.options[j].error, layers[one].options[j].error) << alone.options[j].label();
  }
}
