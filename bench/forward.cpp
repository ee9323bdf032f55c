// bench_forward: ViT forward throughput at batch 32, as images/s and as a fraction of this machine's fp32 matmul
// rate measured in the same run (the "roof"). Usage: bench_forward [--model DIR] [--batch B] [--iters N]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "bench_util.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/models/model.h"
#include "lorq/models/vit.h"
#include "lorq/common/parallel_ops.h"

using namespace lorq;

namespace {
using bench::now;

// The machine's fp32 matmul rate: the better of ATen's matmul and the engine's thread-split GEMM on a large
// square product, so the roof is never understated.
double matmul_gflops(int64_t n, int reps) {
  at::Tensor a = at::randn({n, n}), b = at::randn({n, n});
  double best = 1e9;
  for (int variant = 0; variant < 2; ++variant) {
    auto run = [&] { return variant == 0 ? at::matmul(a, b) : parallel_linear(a, b.t(), {}); };
    run();  // warm-up
    for (int i = 0; i < reps; ++i) {
      const double t = now();
      run();
      best = std::min(best, now() - t);
    }
  }
  return 2.0 * n * n * n / best / 1e9;
}

// Multiply-adds x2 of every matmul in the network, per image.
double vit_flops(const VitConfig& c) {
  const double P = c.patch_size, D = c.embed_dim, G = c.img_size / c.patch_size, N = G * G + (c.class_token ? 1 : 0);
  const double hidden = D * c.mlp_ratio;
  double f = 2 * G * G * (c.in_chans * P * P) * D;
  const double block = 2 * N * D * 3 * D + 2 * 2 * N * N * D + 2 * N * D * D + 2 * 2 * N * D * hidden;
  f += c.depth * block + 2 * D * c.num_classes;
  return f;
}
}  // namespace

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  int batch = 32, iters = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_path = argv[i + 1];
    if (!std::strcmp(argv[i], "--batch")) batch = std::stoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--iters")) iters = std::stoi(argv[i + 1]);
  }
  init_threads();
  for (int i = 1; i + 1 < argc; i += 2)
    if (!std::strcmp(argv[i], "--torch-threads")) at::set_num_threads(std::stoi(argv[i + 1]));
  c10::NoGradGuard no_grad;
  std::printf("threads: %d\n", at::get_num_threads());
  const double roof = matmul_gflops(2048, 5);
  std::printf("fp32 matmul roof (2048^3): %.1f GFLOP/s\n", roof);

  std::unique_ptr<Model> model;
  try {
    model = load_model(model_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_forward: %s\n", e.what());
    return 1;
  }
  const VitConfig& c = dynamic_cast<const VisionTransformer&>(*model).config();  // the FLOP count is ViT's
  const Preprocessing& pp = model->preprocessing();
  at::Tensor x = at::randn({batch, pp.input_channels, pp.input_height, pp.input_width});
  model->forward(x).logits();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < iters; ++i) {
    const double t = now();
    model->forward(x).logits();
    times.push_back(now() - t);
  }
  std::sort(times.begin(), times.end());
  const double median = times[times.size() / 2];
  const double flops = vit_flops(c) * batch;
  const double gflops = flops / median / 1e9;
  std::printf("model: %s, batch %d, %.3f GFLOP per image\n", c.architecture.c_str(), batch, vit_flops(c) / 1e9);
  std::printf("forward: median %.1f ms per batch, %.1f images/s, %.1f GFLOP/s\n", median * 1e3, batch / median, gflops);
  std::printf("fraction of matmul roof: %.2f (target >= 0.60)\n", gflops / roof);
  return 0;
}
