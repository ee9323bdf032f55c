// bench_lraqvit_recovery: what LRA-QViT's distillation recovery (lorq/lraqvit/distill.h) buys per minute of CPU on a
// real model. RB-LRA at the default ranks (qkv, fc1, fc2 at r = k/2), then distillation on the calibration images
// (every 4th image of the set; labels not used: the teacher's predictions only), with the held-out top-1 (the other
// images) of the merged model measured every --eval-every steps. Evaluation time is not counted in the
// training time printed.
// Usage: bench_lraqvit_recovery [--model DIR] [--images DIR] [--steps N] [--batch B] [--lr LR] [--eval-every K]
//                               [--init zero|wr_reported|random] [--biases-norms]
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "bench_util.h"
#include "lorq/io/images.h"
#include "lorq/lraqvit/distill.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;
using namespace lorq::lraqvit;

int main(int argc, char** argv) {
  std::string model_path = std::string(LORQ_SHARED_DIR) + "/models/deit_tiny_patch16_224";
  std::string images_dir = std::string(LORQ_SHARED_DIR) + "/datasets/imagenet-sample-500/images";
  DistillSettings ds;
  RbLraSettings rs;
  int eval_every = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool v = i + 1 < argc;
    if (a == "--model" && v)
      model_path = argv[++i];
    else if (a == "--images" && v)
      images_dir = argv[++i];
    else if (a == "--steps" && v)
      ds.steps = std::stoi(argv[++i]);
    else if (a == "--batch" && v)
      ds.batch = std::stoi(argv[++i]);
    else if (a == "--lr" && v)
      ds.lr = std::stod(argv[++i]);
    else if (a == "--eval-every" && v)
      eval_every = std::stoi(argv[++i]);
    else if (a == "--init" && v)
      rs.init = branch_init_from_string(argv[++i]);
    else if (a == "--biases-norms")
      ds.train_biases_norms = true;
    else {
      std::fprintf(stderr, "unknown argument %s\n", a.c_str());
      return 2;
    }
  }
  init_threads();
  auto model = load_model(model_path);
  auto teacher = model->clone();
  const ImageSet set = open_image_set(images_dir, "", model->label_names());
  ImageSet calib, held_out;
  calib.source = held_out.source = set.source;
  for (size_t i = 0; i < set.size(); ++i) (i % 4 == 0 ? calib : held_out).items.push_back(set.items[i]);
  const at::Tensor images = load_batch(calib, 0, calib.size(), model->preprocessing(), 2).images;
  std::printf("model %s, %lld calibration images, %zu held-out images, steps %d, batch %d, lr %g, init %s%s\n",
              model_path.c_str(), (long long)images.size(0), held_out.size(), ds.steps, ds.batch, ds.lr,
              to_string(rs.init).c_str(), ds.train_biases_norms ? ", biases and norms trained" : "");

  EvalOptions eo;
  const auto top1 = [&](Model& m) {
    c10::NoGradGuard no_grad;
    return evaluate(m, held_out, eo).top1_pct();
  };
  std::printf("float top-1 %.2f%%\n", top1(*model));
  auto layers = truncate_layers(*model, rs);
  const RankSummary sum = rank_summary(layers);
  std::printf("RB-LRA: %zu layers, %lld -> %lld parameters\n", layers.size(), (long long)sum.dense_params,
              (long long)sum.factor_params);
  install_branches(*model, layers);
  std::printf("step %4d  train %7.1f s  top-1 %.2f%%\n", 0, 0.0, top1(*model));
  remove_overrides(*model, layers);

  double eval_s = 0;
  const double t0 = bench::now();
  distill(*model, *teacher, layers, images, {}, ds, {}, "", [&](const DistillStep& st) {
    if (st.step % eval_every != 0 && st.step != st.steps) return;
    const double e0 = bench::now();
    const double acc = top1(*model);  // the training overrides are installed: the merged function
    eval_s += bench::now() - e0;
    std::printf("step %4d  train %7.1f s  top-1 %.2f%%  loss %.4f (task %.4f, features %.4f)\n", st.step,
                bench::now() - t0 - eval_s, acc, st.loss, st.task, st.feature);
    std::fflush(stdout);
  });
  std::printf("training %.1f s (%.2f s/step), peak RSS %.0f MB\n", bench::now() - t0 - eval_s,
              (bench::now() - t0 - eval_s) / ds.steps, bench::peak_rss_mb());
  return 0;
}
