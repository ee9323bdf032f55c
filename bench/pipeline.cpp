// bench_pipeline: time and peak memory of each stage of the weight pipeline (calibration, LFH, candidates, global
// error) on a real model, the global-error stage's throughput as a fraction of the matmul roof, and how well the
// fast LFH estimate ranks options against the measured error (Spearman, anchor options).
// With --quantizer gptq the candidates are error-compensated and the global error stage is the cross-fitted one
// (each option fitted on one half of the calibration images and measured on the other: the same forward passes).
// Usage: bench_pipeline [--model DIR] [--calib DIR] [--images N] [--lfh-images N] [--projections P] [--anchors K]
//                       [--quantizer nearest|gptq]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "bench_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/common/rank_correlation.h"
#include "lorq/models/vit.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/pipeline/candidates.h"
#include "lorq/pipeline/cross_fit.h"
#include "lorq/pipeline/input_moments.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/quant/gptq.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {
using bench::now;
using bench::peak_rss_mb;

double roof_gflops() {
  at::Tensor a = at::randn({2048, 2048}), b = at::randn({2048, 2048});
  double best = 1e9;
  for (int i = 0; i < 4; ++i) {
    const double t = now();
    parallel_linear(a, b, {});
    best = std::min(best, now() - t);
  }
  return 2.0 * 2048 * 2048 * 2048 / best / 1e9;
}

// Multiply-adds x2 of running the network from `stage` on one image (ViT).
double flops_from(const VitConfig& c, int stage) {
  const double D = c.embed_dim, G = c.img_size / c.patch_size, N = G * G + (c.class_token ? 1 : 0);
  const double block = 2 * N * D * 3 * D + 2 * 2 * N * N * D + 2 * N * D * D + 2 * 2 * N * D * D * c.mlp_ratio;
  double f = 2 * D * c.num_classes + (c.depth - std::max(stage, 0)) * block;
  if (stage < 0) f += 2 * G * G * (c.in_chans * c.patch_size * c.patch_size) * D;
  return f;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  std::string calib_dir = std::string(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  CalibrationSettings cs;
  int lfh_images = 8;
  LfhOptions lo;
  GlobalErrorSettings gs;
  Quantizer quantizer = Quantizer::Nearest;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--calib")) calib_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--images")) cs.images = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--lfh-images")) lfh_images = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--projections")) lo.projections = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--anchors")) gs.anchors = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--quantizer")) quantizer = parse_quantizer(argv[i + 1]);
  }
  CandidateSettings candidate_settings;
  candidate_settings.quantizer = quantizer;
  init_threads();
  std::printf("threads %d; calibration %d images, LFH %d images x %d projections, %d anchors, quantizer %s\n",
              at::get_num_threads(), cs.images, lfh_images, lo.projections, gs.anchors, quantizer_name(quantizer));
  const double roof = roof_gflops();
  std::printf("matmul roof: %.1f GFLOP/s\n", roof);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // each stage's line as soon as it ends
  try {
    auto model = load_model(model_path);
    ImageSet set = open_image_set(calib_dir, "", model->label_names(), model->task());
    double t = now();
    Calibration calib = calibrate(*model, set, cs);
    std::printf("calibration:  %7.1f s  peak RSS %6.0f MB\n", now() - t, peak_rss_mb());
    t = now();
    auto H =
        label_free_hessian(*model, calib.images.slice(0, 0, std::min<int64_t>(lfh_images, calib.images.size(0))), lo);
    std::printf("sensitivity:  %7.1f s  peak RSS %6.0f MB\n", now() - t, peak_rss_mb());
    t = now();
    std::vector<LayerCandidates> layers;
    const bool gptq = quantizer == Quantizer::Gptq;
    std::map<std::string, InputMoment> moments;
    if (gptq) moments = layer_input_moments(*model, calib.images, cs.batch);
    for (const auto& l : model->linear_layers())
      layers.push_back(build_layer_candidates(l.name, model->weight(l.name), H.at(l.name), l.low_rank_allowed,
                                              candidate_settings, compensation_moment(moments, l.name)));
    moments.clear();
    std::printf("candidates:   %7.1f s  peak RSS %6.0f MB\n", now() - t, peak_rss_mb());
    std::vector<LayerCandidates> estimated = layers;
    t = now();
    if (gptq) {
      // The folds' fits are not part of the measurement: timed on their own.
      CrossFit fit = cross_fit_candidates(*model, calib, layers, candidate_settings.gptq, {}, nullptr, &H);
      std::printf("cross-fit:    %7.1f s  peak RSS %6.0f MB\n", now() - t, peak_rss_mb());
      t = now();
      measure_cross_fitted(*model, calib, layers, std::move(fit), gs, {}, &H);
    } else {
      measure_global_errors(*model, calib, layers, gs);
    }
    const double ge = now() - t;
    // The matmul roof fraction needs the architecture's FLOP count: known for a ViT only.
    const auto* vit = dynamic_cast<const VisionTransformer*>(model.get());
    double flops = 0;
    int64_t measurements = 0;
    for (const auto& lc : layers)
      for (const auto& o : lc.options)
        if (o.measured) {
          if (vit) flops += calib.images.size(0) * flops_from(vit->config(), model->layer(lc.layer).stage);
          ++measurements;
        }
    if (vit) {
      std::printf("global error: %7.1f s  peak RSS %6.0f MB  (%lld measurements, %.1f GFLOP/s = %.2f of roof)\n", ge,
                  peak_rss_mb(), (long long)measurements, flops / ge / 1e9, flops / ge / 1e9 / roof);
    } else {
      std::printf("global error: %7.1f s  peak RSS %6.0f MB  (%lld measurements)\n", ge, peak_rss_mb(),
                  (long long)measurements);
    }
    if (gptq) return 0;  // its estimate's ranking: bench_first_allocation --quantizer gptq
    GlobalErrorSettings est = gs;
    est.estimate = true;
    t = now();
    measure_global_errors(*model, calib, estimated, est, {}, &H);
    std::printf("estimate:     %7.1f s\n", now() - t);
    std::vector<double> m, e;
    double per_layer = 0;
    int counted = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      if (!layers[i].low_rank_allowed) continue;
      std::vector<double> lm, le;
      for (size_t k = 0; k < layers[i].options.size(); ++k)
        if (layers[i].options[k].measured) {
          lm.push_back(layers[i].options[k].error);
          le.push_back(estimated[i].options[k].error);
        }
      m.insert(m.end(), lm.begin(), lm.end());
      e.insert(e.end(), le.begin(), le.end());
      if (lm.size() > 2) {
        per_layer += spearman(lm, le);
        ++counted;
      }
    }
    std::printf("Spearman(estimate, measured): pooled %.3f over %zu options; mean per layer %.3f over %d layers\n",
                spearman(m, e), m.size(), per_layer / std::max(1, counted), counted);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_pipeline: %s\n", ex.what());
    return 1;
  }
  return 0;
}
