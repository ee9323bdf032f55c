// bench_rounding: adaptive rounding (spec §10) on a real model at an average bit budget: time per layer (data
// collection and training), the whole run, peak RSS, and held-out top-1 of the float model, nearest rounding and
// learned rounding. The analysis is cached (--cache) so that repeated runs time the rounding alone.
// Usage: bench_rounding [--model DIR] [--calib DIR] [--bits B] [--iterations N] [--images N] [--tokens T]
//                       [--rows R] [--readout-share S] [--views V] [--per-layer] [--block-images K]
//                       [--stop-after LAYERS] [--cache DIR] [--no-eval]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <string>

#include "bench_util.h"
#include "lorq/quant/adaptive_rounding.h"
#include "lorq/pipeline/compress.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/pipeline/session_cache.h"

using namespace lorq;

namespace {
using bench::now;
using bench::peak_rss_mb;
}  // namespace

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  std::string calib_dir = std::string(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  std::string cache_dir = "/tmp/lorq_bench_rounding_cache";
  double bits = 3;
  int stop_after = -1;
  bool eval = true;
  RoundingSettings rs;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--no-eval")) eval = false;
    if (!std::strcmp(argv[i], "--per-layer")) rs.scope = RoundingScope::Layer;
    if (!has_value) continue;
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--calib")) calib_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--cache")) cache_dir = argv[i + 1];
    if (!std::strcmp(argv[i], "--bits")) bits = std::stod(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iterations")) rs.iterations = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--images")) rs.images = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--tokens")) rs.tokens_per_image = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--rows")) rs.rows_per_step = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--readout-share")) rs.readout_share = std::stod(argv[i + 1]);
    if (!std::strcmp(argv[i], "--views")) rs.augmented_views = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--block-images")) rs.block_images_per_step = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--stop-after")) stop_after = std::stoi(argv[i + 1]);
  }
  setvbuf(stdout, nullptr, _IOLBF, 0);  // live lines when redirected to a log
  init_threads();
  std::printf(
      "threads %d; %.1f average bits; rounding: %s, %d iterations, %d images + %d augmented views each, %d "
      "tokens/image, %d rows/step (per layer), %d images/step (per block), readout share %.2f\n",
      at::get_num_threads(), bits, rs.scope == RoundingScope::Layer ? "each layer alone" : "blocks together",
      rs.iterations, rs.images, rs.augmented_views, rs.tokens_per_image, rs.rows_per_step, rs.block_images_per_step,
      rs.readout_share);
  try {
    auto model = load_model(model_path);
    ImageSet set = open_image_set(calib_dir, "", model->label_names());
    double t = now();
    const CompressionAnalysis analysis = analyze_model_cached(*model, model_path, set, CompressSettings{}, cache_dir);
    std::printf("analysis (cached in %s): %.1f s\n", cache_dir.c_str(), now() - t);
    const int64_t budget = static_cast<int64_t>(analysis.compressible_params * bits / 8);
    const Allocation allocation = allocate(analysis, budget);

    // Rounding images: the analysis' calibration images first, then the next ones; the rest is held out.
    const FinalImages split = split_final_images(set, analysis.calibration_files, static_cast<size_t>(rs.images));
    const ImageSet& rounding_set = split.train;
    const ImageSet& held_out = split.held_out;
    t = now();
    const at::Tensor images = load_batch(rounding_set, 0, rounding_set.size(), model->preprocessing(), 2).images;
    std::printf("loaded %lld rounding images in %.1f s; %zu held out\n", (long long)images.size(0), now() - t,
                held_out.size());

    const std::vector<CompressedLayer> nearest = compress_layers(*model, analysis, allocation);
    std::vector<CompressedLayer> rounded = nearest;
    // --stop-after: the later layers count as already learned, so round_layers skips them (timing only).
    if (stop_after >= 0)
      for (size_t i = stop_after; i < rounded.size(); ++i) rounded[i].rounding_learned = true;
    t = now();
    JobControl job;
    job.progress = [&](const Progress& p) {  // one line per finished layer, as it happens
      if (p.detail.size() > 6 && p.detail.compare(p.detail.size() - 6, 6, ": done") == 0)
        std::printf("  %s (%.0f s)\n", p.detail.c_str(), p.elapsed_s);
    };
    const RoundingReport report = round_layers(*model, rounded, images, rs, job);
    const double total = now() - t;
    if (stop_after >= 0) {
      std::printf("stopped after %d layers (top-1 not measured)\n", stop_after);
      eval = false;
    }
    std::printf("%-22s %-16s %8s %8s %11s %11s %8s\n", "layer", "choice", "data s", "train s", "nearest", "learned",
                "flipped");
    double collect = 0, train = 0, problems = 0;
    for (const auto& r : report.layers) {
      const auto it = std::find_if(rounded.begin(), rounded.end(), [&](const auto& l) { return l.layer == r.layer; });
      std::printf("%-22s %-16s %8.2f %8.2f %11.4g %11.4g %7.1f%%%s\n", r.layer.c_str(), it->option.label().c_str(),
                  r.collect_seconds, r.seconds - r.collect_seconds, r.nearest_error, r.learned_error,
                  100 * r.flipped_fraction, r.kept_nearest ? " (kept nearest)" : "");
      collect += r.collect_seconds / r.group;  // layers learned together carry their block's times and losses
      train += (r.seconds - r.collect_seconds) / r.group;
      problems += 1.0 / r.group;
    }
    const double n = std::max(1.0, problems);
    std::printf(
        "rounding: %.1f s for %zu layers in %.0f problems (%.2f s/problem: data %.2f, training %.2f; other passes "
        "%.1f s)\n",
        total, report.layers.size(), problems, total / n, collect / n, train / n, total - collect - train);
    std::printf("peak RSS %.0f MB\n", peak_rss_mb());
    if (eval) {
      const double fp = evaluate(*model, held_out, {}).top1_pct();
      auto m = load_model(model_path);
      apply_compressed_layers(*m, nearest);
      const double tn = evaluate(*m, held_out, {}).top1_pct();
      apply_compressed_layers(*m, rounded);
      const double tr = evaluate(*m, held_out, {}).top1_pct();
      std::printf("top-1 on %zu held-out images: float %.2f%%, nearest %.2f%%, rounded %.2f%% (%.1f average bits)\n",
                  held_out.size(), fp, tn, tr, bits);
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_rounding: %s\n", ex.what());
    return 1;
  }
  return 0;
}
