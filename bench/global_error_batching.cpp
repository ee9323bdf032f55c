// bench_global_error_batching: the measured global error of a layer's options, one option per pass against several
// options per pass (GlobalErrorSettings::max_pass_bytes), on DeiT-Tiny's calibration; alternated A/B/A/B so that a
// loaded machine's drift hits both alike. Prints each layer's seconds per setting and the largest relative
// difference of the errors (float rounding of the bigger GEMMs).
// Usage: bench_global_error_batching [--model DIR] [--calib DIR] [--rounds R]
#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "bench_util.h"
#include "lorq/pipeline/calibration.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  std::string calib_dir = std::string(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  int rounds = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--calib")) calib_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--rounds")) rounds = std::stoi(argv[i + 1]);
  }
  init_threads();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    auto model = load_model(model_path);
    const ImageSet set = open_image_set(calib_dir, "", model->label_names(), model->task());
    const Calibration calib = calibrate(*model, set, CalibrationSettings{});
    for (const char* name : {"blocks.0.attn.qkv", "blocks.5.mlp.fc1", "blocks.10.mlp.fc2"}) {
      const auto& l = model->layer(name);
      const LayerCandidates base = build_layer_candidates(name, model->weight(name), {}, l.low_rank_allowed);
      double t_single = 0, t_batched = 0, max_rel = 0;
      int measured = 0;
      for (int r = 0; r < rounds; ++r) {
        GlobalErrorSettings single, batched;
        single.max_pass_bytes = 0;
        LayerCandidates a = base, b = base;
        double t = bench::now();
        measure_layer_global_errors(*model, calib, a, single, false);
        t_single += bench::now() - t;
        t = bench::now();
        measure_layer_global_errors(*model, calib, b, batched, false);
        t_batched += bench::now() - t;
        measured = 0;
        for (size_t i = 0; i < a.options.size(); ++i)
          if (a.options[i].measured) {
            ++measured;
            max_rel = std::max(max_rel, std::abs(a.options[i].error - b.options[i].error) / a.options[i].error);
          }
      }
      std::printf(
          "%-20s block %2d, %2d measured options: one per pass %6.1f s, several per pass %6.1f s (x%.2f); "
          "largest relative difference %.2g\n",
          name, l.stage, measured, t_single / rounds, t_batched / rounds, t_single / t_batched, max_rel);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_global_error_batching: %s\n", e.what());
    return 1;
  }
  return 0;
}
