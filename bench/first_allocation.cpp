// bench_first_allocation: the progressive analysis on a real model at the default settings, one run: the time to
// the first allocation (LFH-estimated global errors, allocator built and solved at 4 average bits) against the
// whole weight pipeline (calibration, LFH, candidates, measured global errors, allocation) in the same run, each
// stage's time, and where the measured global error stage spends its time: per block the layers' measurement time
// (a layer's measurement re-runs the network from its block on) and the time spent building the options' weights.
// With a gptq analysis it also says how well the first revision's estimates rank the options against the final
// cross-fitted measurement (and how the plain LFH estimate of the compensated weights would have).
// Usage: bench_first_allocation [--model DIR] [--calib DIR] [--quantizer nearest|gptq] [--avg-bits B]
//                               [--calibrated-errors 0|1]   (the engine's default is 0; lorq's and the workbench's 1)
//                               [--gptq-images N]           (gptq: moments from N images, as lorq's --gptq-images)
//                               [--gptq-damping auto|D]     (gptq: as lorq's --gptq-damping; default 0.01)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "bench_util.h"
#include "lorq/common/rank_correlation.h"
#include "lorq/pipeline/compress.h"
#include "lorq/pipeline/damping_choice.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

double quantile(std::vector<double> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(std::lround(q * double(v.size() - 1)))];
}

// Of the options measured in `final` (not scaled) of the layers `estimated` estimated: per layer the Spearman of the
// estimate against the measurement and the geometric mean of measured/estimated, and the Spearman over all of them.
void print_estimate_quality(const char* name, const CompressionAnalysis& final,
                            const std::vector<std::vector<double>>& estimates, const CompressionAnalysis& estimated) {
  std::vector<double> within, ratio, all_e, all_m;
  for (size_t i = 0; i < final.layers.size(); ++i) {
    if (estimated.layers[i].errors_measured) continue;  // measured at once: nothing estimated
    std::vector<double> e, m;
    for (size_t j = 0; j < final.layers[i].options.size(); ++j) {
      const LayerOption& o = final.layers[i].options[j];
      if (!o.measured || estimates[i][j] <= 0 || o.error <= 0) continue;
      e.push_back(estimates[i][j]);
      m.push_back(o.error);
    }
    if (e.size() < 3) continue;
    within.push_back(spearman(e, m));
    double log_ratio = 0;
    for (size_t k = 0; k < e.size(); ++k) log_ratio += std::log(m[k] / e[k]);
    ratio.push_back(std::exp(log_ratio / double(e.size())));
    all_e.insert(all_e.end(), e.begin(), e.end());
    all_m.insert(all_m.end(), m.begin(), m.end());
  }
  std::printf(
      "  %-34s Spearman within a layer: median %.3f, p10 %.3f (%zu layers); over all %zu options %.3f;\n"
      "  %-34s measured/estimated per layer: p10 %.2f, median %.2f, p90 %.2f\n",
      name, quantile(within, 0.5), quantile(within, 0.1), within.size(), all_e.size(), spearman(all_e, all_m), "",
      quantile(ratio, 0.1), quantile(ratio, 0.5), quantile(ratio, 0.9));
}

// An allocation's choices priced with another analysis' errors (a layer kept in float adds none).
double priced(const CompressionAnalysis& a, const Allocation& alloc) {
  double sum = 0;
  for (size_t i = 0; i < alloc.choice.size(); ++i)
    if (alloc.choice[i] >= 0) sum += a.layers[i].options[alloc.choice[i]].error;
  return sum;
}

}  // namespace

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
    if (!std::strcmp(argv[i], "--gptq-images")) s.candidates.gptq_images = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--gptq-damping")) {
      if (std::string(argv[i + 1]) == "auto")
        s.candidates.gptq_damping_choices = default_gptq_damping_choices();
      else
        s.candidates.gptq.damping = std::stod(argv[i + 1]);
    }
  }
  init_threads();
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::printf("threads %d; calibration %d images, LFH %d images x %d projections, %d anchors, quantizer %s%s%s\n",
              at::get_num_threads(), s.calibration.images, s.lfh_images, s.lfh.projections, s.global_error.anchors,
              quantizer_name(s.candidates.quantizer), s.global_error.calibrated ? ", calibrated errors" : "",
              s.candidates.gptq_images > 0
                  ? (", moments from " + std::to_string(s.candidates.gptq_images) + " images").c_str()
                  : "");
  try {
    auto model = load_model(model_path);
    const ImageSet set = open_image_set(calib_dir, "", model->label_names(), model->task());
    // Per measured layer: its block and its measurement's wall time (from the stage's own progress reports).
    std::map<int, std::pair<int, double>> per_block;  // block -> (layers, seconds)
    double last_report = 0;
    JobControl job;
    job.progress = [&](const Progress& p) {
      if (p.stage != "global error") return;
      // gptq's cross-fit measures in two folds, each with its own clock.
      const double dt = p.elapsed_s >= last_report ? p.elapsed_s - last_report : p.elapsed_s;
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
    CompressionAnalysis first_revision;
    const CompressionAnalysis a = analyze_model(*model, set, s, job, nullptr, [&](const CompressionAnalysis& rev) {
      if (first >= 0) return;
      first_revision = rev;
      budget = budget_bytes_for_avg_bits(avg_bits, rev.compressible_params);
      first_error = LayerAllocator(rev).solve(budget).predicted_error;
      first = bench::now() - t0;
      std::printf("first allocation:  %7.1f s  (%d of %zu layers measured, %.1f average bits, predicted error %.4g)\n",
                  first, rev.layers_measured(), rev.layers.size(), avg_bits, first_error);
    });
    if (first < 0) {  // no early revision (the estimate setting: the final analysis is the only one)
      budget = budget_bytes_for_avg_bits(avg_bits, a.compressible_params);
      first = bench::now() - t0;
      std::printf("first allocation:  %7.1f s  (none before the end: this analysis has no estimate pass)\n", first);
    }
    const Allocation final_alloc = LayerAllocator(a).solve(budget);
    const double whole = bench::now() - t0;
    if (s.candidates.quantizer == Quantizer::Gptq && !first_revision.layers.empty()) {
      // The first revision's estimates against the final measurement, and the plain LFH estimate of the same
      // (compensated) weights for comparison. Only the options the final analysis measured (not scaled ones).
      std::printf("estimated (first revision) against measured (final) global errors, measured options:\n");
      std::vector<std::vector<double>> corrected, plain;
      const Calibration calib = calibrate(*model, set, s.calibration);  // the same seeded images
      c10::NoGradGuard no_grad;
      for (size_t i = 0; i < a.layers.size(); ++i) {
        const LayerCandidates& lc = a.layers[i];
        corrected.emplace_back();
        plain.emplace_back();
        const at::Tensor W = model->weight(lc.layer);
        for (size_t j = 0; j < lc.options.size(); ++j) {
          corrected.back().push_back(first_revision.layers[i].options[j].error);
          plain.back().push_back(lc.options[j].measured && !first_revision.layers[i].errors_measured
                                     ? estimated_nsr(W, compressed_weight(lc, lc.options[j], W), a.lfh.at(lc.layer),
                                                     calib, task_of(*model))
                                     : -1);
        }
      }
      print_estimate_quality("corrected (first revision):", a, corrected, first_revision);
      print_estimate_quality("plain LFH of the compensated W~:", a, plain, first_revision);
      // The allocation the plain estimate would have made: its anchors' estimates, interpolated as the measurement's.
      CompressionAnalysis plain_analysis = a;
      for (size_t i = 0; i < a.layers.size(); ++i)
        if (!first_revision.layers[i].errors_measured)
          measure_layer_global_errors(*model, calib, plain_analysis.layers[i], s.global_error, true, &a.lfh);
      std::printf("  plain LFH estimate's allocation priced with the measured errors: %.4g\n",
                  priced(a, LayerAllocator(plain_analysis).solve(budget)));
      std::printf(
          "  first allocation's predicted error %.4g; the same choice under the measured errors %.4g "
          "(measured optimum %.4g)\n",
          first_error, priced(a, LayerAllocator(first_revision).solve(budget)), final_alloc.predicted_error);
    }
    if (a.gptq_damping > 0)
      std::printf("  gptq damping %g%s\n", a.gptq_damping, a.gptq_damping_scores.empty() ? "" : " (chosen)");
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
