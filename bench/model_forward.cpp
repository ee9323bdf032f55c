// bench_model_forward: any model's forward throughput at its input size (SegFormer 512x512, YOLOS its nominal
// shortest edge; --height/--width for another, e.g. a COCO photo's 800x1066 or 512x672), the per-part time
// (embedding, stages, finish), and the bytes of the state passed between stages (what a calibration cache holds per
// image). Usage: bench_model_forward [--model DIR] [--batch B] [--iters N] [--height H --width W]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "lorq/common/parallel_ops.h"
#include "lorq/models/model.h"

using namespace lorq;

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/segformer_b0_random";
  int batch = 2, iters = 5, height = 0, width = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--height")) height = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--width")) width = std::stoi(argv[i + 1]);
  }
  configure_threads();
  c10::NoGradGuard no_grad;
  std::unique_ptr<Model> model;
  try {
    model = load_model(model_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_forward: %s\n", e.what());
    return 1;
  }
  const Preprocessing& pp = model->preprocessing();
  const int h = height > 0 ? height : pp.input_height, w = width > 0 ? width : pp.input_width;
  std::printf("model %s (%s), threads %d, batch %d, input %dx%d\n", model->architecture().c_str(),
              model->family().c_str(), at::get_num_threads(), batch, h, w);
  const at::Tensor x = at::randn({batch, pp.input_channels, h, w});
  model->forward(x);  // warm-up

  std::vector<double> totals;
  std::vector<double> part(model->num_stages() + 2, 1e9);  // best time of embed, each stage, finish
  std::vector<int64_t> state_per_image(model->num_stages() + 1, 0);
  for (int it = 0; it < iters; ++it) {
    const double t0 = bench::now();
    double t = t0;
    StageState s = model->embed(x);
    part[0] = std::min(part[0], bench::now() - t);
    state_per_image[0] = state_bytes(s) / batch;
    for (int i = 0; i < model->num_stages(); ++i) {
      t = bench::now();
      s = model->run_stage(i, s);
      part[i + 1] = std::min(part[i + 1], bench::now() - t);
      state_per_image[i + 1] = state_bytes(s) / batch;
    }
    t = bench::now();
    model->finish(s);
    part.back() = std::min(part.back(), bench::now() - t);
    totals.push_back(bench::now() - t0);
  }
  std::sort(totals.begin(), totals.end());
  const double median = totals[totals.size() / 2];
  std::printf("forward: %.3f s per batch (median of %d), %.2f images/s\n", median, iters, batch / median);
  std::printf("%-10s %10s %16s\n", "part", "best ms", "state MB/image");
  std::printf("%-10s %10.1f %16.2f\n", "embed", part[0] * 1e3, state_per_image[0] / 1e6);
  for (int i = 0; i < model->num_stages(); ++i)
    std::printf("stage %-4d %10.1f %16.2f\n", i, part[i + 1] * 1e3, state_per_image[i + 1] / 1e6);
  std::printf("%-10s %10.1f\n", "finish", part.back() * 1e3);
  std::printf("peak RSS: %.0f MB\n", bench::peak_rss_mb());
  return 0;
}
