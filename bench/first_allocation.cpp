// bench_first_allocation: the progressive analysis on a real model at the default settings, one run: the time to
// the first allocation (LFH-estimated global errors, allocator built and solved at 4 average bits) against the
// whole weight pipeline (calibration, LFH, candidates, measured global errors, allocation) in the same run, each
// stage's time, and where the measured global error stage spends its time: per block the layers' measurement time
// (a layer's measurement re-runs the network from its block on) and the time spent building the options' weights.
// Usage: bench_first_allocation [--model DIR] [--calib DIR] [--quantizer nearest|gptq] [--avg-bits B]
//                               [--calibrated-errors 0|1]   (the engine's default is 0; lorq's and the workbench's 1)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "bench_util.h"
#include "lorq/pipeline/compress.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  std::string calib_dir = std::string(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  CompressSettings s;
  double avg_bits = 4.0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--calib")) calib_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--quantizer")) s.candidates.quantizer = parse_quantizer(argv[i + 1]);
    if (!std::strcmp(argv[i], "--avg-bits")) avg_bits = std::stod(argv[i + 1]);
    if (!std::strcmp(argv[i], "--calibrated-errors")) s.global_error.calibrated = std::strcmp(argv[i + 1], "0") != 0;
  }
  init_threads();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("threads %d; calibration %d images, LFH %d images x %d projections, %d anchors, quantizer %s%s\n",
              at::get_num_threads(), s.calibration.images, s.lfh_images, s.lfh.projections, s.global_error.anchors,
              quantizer_name(s.candidates.quantizer), s.global_error.calibrated ? ", calibrated errors" : "");
  try {
    auto model = load_model(model_path);
    const ImageSet set = open_image_set(calib_dir, "", model->label_names(), model->task());
    // Per measured layer: its block and its measurement's wall time (from the stage's own progress reports).
    std::map<int, std::pair<int, double>> per_block;  // block -> (layers, seconds)
    double last_report = 0;
    JobControl job;
    job.progress = [&](const Progress& p) {
      if (p.stage != "global error") return;
      const double dt = p.elapsed_s - last_report;
      last_report = p.elapsed_s;
      // detail: "layer k/n NAME: error ..." (gptq's cross-fit: "fold f/2, layer k/n NAME: ...")
      const size_t l = p.detail.find("layer ");
      if (l == std::string::npos) return;
      const size_t a = p.detail.find(' ', l + 6) + 1, b = p.detail.find(':', a);
      if (a == 0 || b == std::string::npos) return;
      const std::string layer = p.detail.substr(a, b - a);
      auto& e = per_block[model->layer(layer).stage];
      ++e.first;
      e.second += dt;
    };
    const double t0 = bench::now();
    double first = -1, first_error = 0;
    int64_t budget = 0;
    const CompressionAnalysis a = analyze_model(*model, set, s, job, nullptr, [&](const CompressionAnalysis& rev) {
      if (first >= 0) return;
      budget = budget_bytes_for_avg_bits(avg_bits, rev.compressible_params);
      first_error = LayerAllocator(rev).solve(budget).predicted_error;
      first = bench::now() - t0;
      std::printf("first allocation:  %7.1f s  (%d of %zu layers measured, %.1f average bits, predicted error %.4g)\n",
                  first, rev.layers_measured(), rev.layers.size(), avg_bits, first_error);
    });
    if (first < 0) {  // no early revision: a gptq analysis (cross-fitted errors) publishes only its final one
      budget = budget_bytes_for_avg_bits(avg_bits, a.compressible_params);
      first = bench::now() - t0;
      std::printf("first allocation:  %7.1f s  (none before the end: this analysis has no estimate pass)\n", first);
    }
    const Allocation final_alloc = LayerAllocator(a).solve(budget);
    const double whole = bench::now() - t0;
    for (const auto& [stage, sec] : a.stage_seconds) std::printf("  stage %-22s %7.1f s\n", stage.c_str(), sec);
    std::printf("whole pipeline:    %7.1f s  (measured allocation, predicted error %.4g)  peak RSS %.0f MB\n", whole,
                final_alloc.predicted_error, bench::peak_rss_mb());
    std::printf("first / whole:     %7.3f\n", first / whole);
    std::printf("targets: first allocation < 60 s: %s; whole weight pipeline < 168 s: %s\n",
                first < 60 ? "met" : "NOT met", whole < 168 ? "met" : "NOT met");

    // Where the measured stage goes: per block, and the options' weights (W~) rebuilt for each measurement.
    std::printf("measured global error stage by block (layers re-run the network from their block on):\n");
    for (const auto& [block, e] : per_block) std::printf("  block %3d: %2d layers %7.1f s\n", block, e.first, e.second);
    c10::NoGradGuard no_grad;
    int64_t measured = 0;
    const double tw = bench::now();
    for (const LayerCandidates& lc : a.layers) {
      const at::Tensor W = model->weight(lc.layer);
      for (const LayerOption& o : lc.options)
        if (o.measured) {
          compressed_weight(lc, o, W);
          ++measured;
        }
    }
    std::printf("  building the %lld measured options' weights: %.1f s of the stage\n", (long long)measured,
                bench::now() - tw);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_first_allocation: %s\n", e.what());
    return 1;
  }
  return 0;
}
