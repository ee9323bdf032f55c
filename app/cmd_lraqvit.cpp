// lorq lraqvit: RB-LRA, recovery by distillation, merge, WADS and W/A quantization (lorq/lraqvit/method.h), the
// float and compressed metric on held-out images, and an export that `lorq eval` reloads bit-exact.
#include "cmd_lraqvit.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "args.h"
#include "lorq/common/error.h"
#include "lorq/io/export_size.h"
#include "lorq/io/images.h"
#include "lorq/lraqvit/lraqvit_export.h"
#include "lorq/tasks/evaluate.h"
#include "progress_bar.h"

namespace lorq::cli {

namespace {

const char* kHelp =
    "usage: lorq lraqvit --model M --calib DIR [--calib-labels CSV] [--eval DIR] [--labels CSV] [--out DIR]\n"
    "                    [--w-bits B] [--act-bits A] [--act-mode sym|asym] [--images N] [--seed S]\n"
    "                    [--layers qkv,fc1,fc2] [--rank-fraction F | --param-ratio R] [--init "
    "zero|wr_reported|random]\n"
    "                    [--steps N] [--batch B] [--lr LR] [--weight-decay WD] [--biases-norms] [--no-recover]\n"
    "                    [--checkpoint FILE] [--wads-steps N] [--wads-images N] [--no-wads] [--limit N]\n\n"
    "LRA-QViT (ICML 2025, ../shared/docs/lraqvit-spec.md): SVD truncation of the block layers (default qkv, fc1, fc2\n"
    "at r = min(m,n)/2), recovery by distillation from the float model on N calibration images (default 64; task\n"
    "loss against the teacher's predictions or the labels, plus block-wise feature MSE; AdamW on the branch deltas,\n"
    "default 100 steps of 8 images at lr 1e-4), merge, WADS per-channel scaling (with activation quantization), then\n"
    "per-channel weights at --w-bits (default 8) for every layer and per-token activations at --act-bits (default\n"
    "8; 0: weights only). Prints the size and the float vs compressed metric on --eval (calibration images left\n"
    "out); --out exports like 'lorq compress --out' ('lorq eval --model DIR' reloads it bit-exact). --checkpoint\n"
    "keeps the distillation's state so an interrupted run resumes.";

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string w;
  while (std::getline(in, w, ','))
    if (!w.empty()) out.push_back(w);
  return out;
}

void print_eval(const std::string& name, const EvalResult& r) {
  std::string figures;
  for (const MetricValue& m : r.metrics) {
    char f[64];
    std::snprintf(f, sizeof f, "%s %6.2f%s", m.name.c_str(), m.value, m.percent ? "%" : "");
    figures += (figures.empty() ? "" : "  ") + std::string(f);
  }
  if (figures.empty()) figures = "no labels";
  std::printf("%-22s %s  (%lld images)\n", name.c_str(), figures.c_str(), (long long)r.labeled);
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path c = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : c.string();
}

}  // namespace

int cmd_lraqvit(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model",         "--calib",       "--calib-labels", "--eval",        "--labels", "--out",
                         "--w-bits",        "--act-bits",    "--act-mode",     "--images",      "--seed",   "--layers",
                         "--rank-fraction", "--param-ratio", "--init",         "--steps",       "--batch",  "--lr",
                         "--weight-decay",  "--checkpoint",  "--wads-steps",   "--wads-images", "--limit"},
         {"--biases-norms", "--no-recover", "--no-wads"});
  if (a.help()) {
    std::puts(kHelp);
    return 0;
  }
  // Every argument is checked before the long work starts.
  const std::string model_path = a.require("--model"), calib_dir = a.require("--calib");
  lraqvit::LraQvitSettings s;
  s.weight_bits = static_cast<int>(a.get_int("--w-bits", 8, 2, 8));
  s.act_bits = static_cast<int>(a.get_int("--act-bits", 8, 0, 8));
  if (s.act_bits == 1) throw UsageError("--act-bits must be 0 (weights only) or 2..8");
  try {
    s.act_mode = lraqvit::token_quant_mode_from_string(a.get("--act-mode", "sym"));
    s.lra.init = lraqvit::branch_init_from_string(a.get("--init", "zero"));
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (a.has("--layers")) s.lra.layer_kinds = split_list(a.get("--layers"));
  if (a.has("--rank-fraction") && a.has("--param-ratio")) throw UsageError("give --rank-fraction or --param-ratio");
  s.lra.rank_fraction = a.get_double("--rank-fraction", 0.5, 1e-6, 1.0);
  s.lra.param_ratio = a.get_double("--param-ratio", 0.0, 0.0, 0.999999);
  s.recover = !a.has("--no-recover");
  s.distill.steps = static_cast<int>(a.get_int("--steps", s.distill.steps, 1, 1 << 24));
  s.distill.batch = static_cast<int>(a.get_int("--batch", s.distill.batch, 1, 4096));
  s.distill.lr = a.get_double("--lr", s.distill.lr, 1e-12, 10);
  s.distill.weight_decay = a.get_double("--weight-decay", s.distill.weight_decay, 0, 10);
  s.distill.train_biases_norms = a.has("--biases-norms");
  s.distill_checkpoint = a.get("--checkpoint");
  s.wads = !a.has("--no-wads");
  s.wads_settings.steps = static_cast<int>(a.get_int("--wads-steps", s.wads_settings.steps, 0, 1 << 20));
  s.wads_settings.images = static_cast<int>(a.get_int("--wads-images", s.wads_settings.images, 1, 1 << 20));
  const int images = static_cast<int>(a.get_int("--images", 64, 1, 1 << 20));
  const uint64_t seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, 1LL << 62));
  const int64_t limit = a.get_int("--limit", 0, 0, 1LL << 40);
  const std::string eval_dir = a.get("--eval"), out = a.get("--out");

  auto model = load_model(model_path);
  const ImageSet calib_set = open_image_set(calib_dir, a.get("--calib-labels"), model->label_names(), model->task());
  ImageSet eval_set;
  if (!eval_dir.empty()) eval_set = open_image_set(eval_dir, a.get("--labels"), model->label_names(), model->task());
  // A seeded draw of the calibration images.
  ImageSet drawn;
  drawn.source = calib_set.source;
  {
    at::Generator g = at::detail::createCPUGenerator(seed);
    const at::Tensor perm = at::randperm(static_cast<int64_t>(calib_set.size()), g, at::kLong);
    for (int64_t i = 0; i < perm.size(0) && i < images; ++i)
      drawn.items.push_back(calib_set.items[perm[i].item<int64_t>()]);
  }
  const ImageBatch batch = load_batch(drawn, 0, drawn.size(), model->preprocessing(), 2);
  for (const auto& f : batch.failed) std::fprintf(stderr, "warning: skipped calibration image %s\n", f.c_str());
  if (batch.images.size(0) == 0) throw Error(calib_dir, "none of the calibration images could be decoded");
  if (batch.images.size(0) < images)
    std::fprintf(stderr, "warning: %lld of the %d requested calibration images are usable\n",
                 (long long)batch.images.size(0), images);
  std::vector<int64_t> label_values(batch.labels.begin(), batch.labels.end());
  const bool labeled = std::any_of(label_values.begin(), label_values.end(), [](int64_t l) { return l >= 0; });
  const at::Tensor labels = labeled ? at::tensor(label_values, at::kLong) : at::Tensor();
  std::vector<std::string> seen;
  for (size_t i : batch.indices) seen.push_back(drawn.items[i].path);
  std::printf("calibration: %lld images of %s%s\n", (long long)batch.images.size(0), calib_dir.c_str(),
              labeled ? " (with labels)" : " (teacher predictions as targets)");

  ProgressBar bar("steps");
  JobControl job;
  std::string stage;
  job.progress = [&](const Progress& p) {
    if (p.stage != stage) {
      bar.finish();
      stage = p.stage;
    }
    bar.update(p);
  };
  const lraqvit::LraQvitResult r = lraqvit::run_lraqvit(*model, batch.images, labels, s, job);
  bar.finish();

  std::printf("RB-LRA: %zu layers truncated, %lld -> %lld parameters\n",
              std::count_if(r.layers.begin(), r.layers.end(),
                            [](const CompressedLayer& c) { return c.form == LayerForm::LowRank; }),
              (long long)r.ranks.dense_params, (long long)r.ranks.factor_params);
  if (!r.distill.history.empty())
    std::printf("distillation: %d steps (resumed at %d), loss %.4f -> %.4f\n", r.distill.steps_run,
                r.distill.resumed_from, r.distill.history.front().loss, r.distill.history.back().loss);
  for (const auto& w : r.distill.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (!r.wads.empty()) {
    double identity = 0, final = 0;
    for (const auto& p : r.wads) {
      identity += p.identity_error;
      final += p.final_error;
    }
    std::printf("WADS: %zu points, summed quantized error %.4g -> %.4g\n", r.wads.size(), identity, final);
  }
  for (const auto& [name, sec] : r.stage_seconds) std::printf("stage %-14s %8.1f s\n", name.c_str(), sec);
  std::printf("total: %lld weight bytes (%.3f average bits, %.2fx vs fp32), W%d%s\n", (long long)r.weight_bytes,
              r.avg_bits(), 32.0 / r.avg_bits(), s.weight_bits,
              s.act_bits > 0 ? ("A" + std::to_string(s.act_bits) + " per token (" + to_string(s.act_mode) + ")").c_str()
                             : " (weights only)");
  if (!out.empty()) {
    lraqvit::export_lraqvit(out, r, model_path, seen);
    std::printf("exported to %s (lorq-config.json, compressed.safetensors, config.json)\n", out.c_str());
    std::fputs(format_export_size(export_size_breakdown(out)).c_str(), stdout);
  }
  if (!eval_dir.empty()) {
    const std::set<std::string> seen_set = [&] {
      std::set<std::string> c;
      for (const auto& p : seen) c.insert(canonical(p));
      return c;
    }();
    const size_t before = eval_set.items.size();
    eval_set.items.erase(std::remove_if(eval_set.items.begin(), eval_set.items.end(),
                                        [&](const ImageItem& i) { return seen_set.count(canonical(i.path)) > 0; }),
                         eval_set.items.end());
    if (eval_set.items.empty()) throw Error(eval_dir, "holds no images besides the calibration images");
    std::printf("evaluating on %zu images (%zu calibration images left out)\n", eval_set.items.size(),
                before - eval_set.items.size());
    EvalOptions o;
    o.limit = limit;
    ProgressBar eval_bar;
    JobControl ej;
    ej.progress = [&](const Progress& p) { eval_bar.update(p); };
    c10::NoGradGuard no_grad;
    const EvalResult fr = evaluate(*model, eval_set, o, ej);
    eval_bar.finish();
    const EvalResult cr = evaluate(*r.model, eval_set, o, ej);
    eval_bar.finish();
    print_eval("float", fr);
    print_eval("LRA-QViT W" + std::to_string(s.weight_bits) +
                   (s.act_bits > 0 ? "A" + std::to_string(s.act_bits) : std::string()),
               cr);
  }
  return 0;
}

}  // namespace lorq::cli
