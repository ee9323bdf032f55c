// lorq: the command-line front end. Parses arguments, calls the core engine, prints results.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>

#include "args.h"
#include "lorq/session/api.h"
#include "lorq/pipeline/compress.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/alloc/constraints_io.h"
#include "lorq/demo/demo.h"
#include "lorq/common/error.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/io/export.h"
#include "lorq/io/export_size.h"
#include "lorq/io/onnx_export.h"
#include "lorq/io/timm_export.h"
#include "lorq/pipeline/final_model.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/demo/shapes_dataset.h"
#include "progress_bar.h"

using namespace lorq;
using lorq::cli::Args;
using lorq::cli::ProgressBar;
using lorq::cli::UsageError;

namespace {

const char* kUsage =
    "lorq: compress vision transformers with low-rank approximation and mixed-precision quantization\n"
    "\n"
    "usage: lorq COMMAND [OPTIONS]\n"
    "\n"
    "commands:\n"
    "  inspect      list a model's compressible layers\n"
    "  eval         top-1/top-5 of a model on an image set\n"
    "  predict      top-5 classes for images\n"
    "  compress     MLoRQ compression under a memory budget (weights, optionally activations and rounding)\n"
    "  fronts       one layer's Pareto front (options, sizes, errors)\n"
    "  round        adaptive rounding of a workbench session (compress --round)\n"
    "  demo-data    generate the procedural shapes image set\n"
    "  demo-train   train the tiny demo ViT on generated shapes\n"
    "  export-onnx  an export as an ONNX model (integer weights + DequantizeLinear) for ONNX Runtime\n"
    "  export-timm  an export's dequantized weights as an ordinary timm checkpoint\n"
    "\n"
    "Run 'lorq COMMAND --help' for a command's options.\n";

void warn_skipped(const std::vector<std::string>& list, const char* what) {
  if (list.empty()) return;
  std::string s;
  for (size_t i = 0; i < list.size() && i < 8; ++i) s += "\n  " + list[i];
  if (list.size() > 8) s += "\n  ... and " + std::to_string(list.size() - 8) + " more";
  std::fprintf(stderr, "warning: %zu %s skipped:%s\n", list.size(), what, s.c_str());
}

int cmd_inspect(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq inspect --model DIR|FILE\n\nPrints the compressible layers (name, shape, parameters, fp32 MB) and "
        "totals.");
    return 0;
  }
  auto model = load_model(a.require("--model"));
  const ModelConfig& c = model->config();
  std::printf("model: %s  (%d blocks, dim %d, %d heads, %d classes, input %dx%d)\n", c.architecture.c_str(), c.depth,
              c.embed_dim, c.num_heads, c.num_classes, c.img_size, c.img_size);
  std::printf("%-26s %-16s %12s %10s %s\n", "layer", "shape", "params", "fp32 MB", "low rank");
  int64_t total = 0;
  for (const auto& l : model->linear_layers()) {
    std::string shape = std::to_string(l.out_features) + "x" + std::to_string(l.in_features);
    std::printf("%-26s %-16s %12lld %10.3f %s\n", l.name.c_str(), shape.c_str(), (long long)l.params(),
                l.fp32_bytes() / 1e6, l.low_rank_allowed ? "yes" : "no");
    total += l.params();
  }
  int64_t all = 0;
  for (const auto& [k, t] : model->named_tensors()) all += t.numel();
  std::printf("total: %zu compressible layers, %lld weights (%.3f MB fp32); %lld parameters in all (%.3f MB fp32)\n",
              model->linear_layers().size(), (long long)total, total * 4 / 1e6, (long long)all, all * 4 / 1e6);
  return 0;
}

int cmd_eval(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--images", "--labels", "--limit", "--batch"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq eval --model M --images DIR [--labels CSV] [--limit N] [--batch B]\n\n"
        "Top-1/top-5 accuracy with the model's eval preprocessing. Labels come from --labels (file,class_index),\n"
        "a labels.csv in or beside DIR, or class sub-folders; without labels only throughput is reported.");
    return 0;
  }
  auto model = load_model(a.require("--model"));
  ImageSet set = open_image_set(a.require("--images"), a.get("--labels"), model->config().label_names);
  warn_skipped(set.skipped, "non-image files");
  EvalOptions o;
  o.limit = a.get_int("--limit", 0, 0, 1LL << 40);
  o.batch = static_cast<int>(a.get_int("--batch", 32, 1, 4096));
  ProgressBar bar;
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  EvalResult r = evaluate(*model, set, o, job);
  bar.finish();
  warn_skipped(r.failed, "unreadable images");
  std::printf("images: %lld  (%.1f images/s)\n", (long long)r.images, r.images_per_s());
  if (r.labeled) {
    std::printf("top-1: %.2f%%  (%lld/%lld)\n", r.top1_pct(), (long long)r.top1, (long long)r.labeled);
    std::printf("top-5: %.2f%%  (%lld/%lld)\n", r.top5_pct(), (long long)r.top5, (long long)r.labeled);
  } else {
    std::printf("no labels: accuracy not measured\n");
  }
  return 0;
}

int cmd_predict(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--top"}, {});
  if (a.help() || a.positional().empty()) {
    std::puts(
        "usage: lorq predict --model M [--top K] IMAGE...\n\nPrints the top-K (default 5) classes with probabilities.");
    return a.help() ? 0 : 2;
  }
  auto model = load_model(a.require("--model"));
  const int k = static_cast<int>(a.get_int("--top", 5, 1, 1000));
  c10::NoGradGuard no_grad;
  int failures = 0;
  for (const std::string& path : a.positional()) {
    try {
      at::Tensor x = load_image(path, model->config().preprocessing).unsqueeze(0);
      at::Tensor logits = model->forward(x)[0];
      std::printf("%s\n", path.c_str());
      for (const Prediction& p : top_k(logits, k, model->config()))
        std::printf("  %6.2f%%  %4d  %s\n", 100.0 * p.probability, p.class_index, p.label.c_str());
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      ++failures;
    }
  }
  return failures ? 1 : 0;
}

int cmd_demo_data(int argc, char** argv) {
  Args a(argc, argv, 2, {"--out", "--count", "--seed", "--size"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq demo-data --out DIR [--count N] [--seed S] [--size PX]\n\n"
        "Writes the procedural shapes set: images/, masks/ and labels.csv (class and box per image).");
    return 0;
  }
  ShapesDatasetSpec s;
  s.count = a.get_int("--count", 600, 1, 10000000);
  s.seed = static_cast<uint64_t>(a.get_int("--seed", 1, 0, 1LL << 62));
  s.size = static_cast<int>(a.get_int("--size", 64, 16, 1024));
  write_shapes_dataset(a.require("--out"), s);
  std::printf("wrote %lld images to %s\n", (long long)s.count, a.require("--out").c_str());
  return 0;
}

int cmd_demo_train(int argc, char** argv) {
  Args a(argc, argv, 2, {"--out", "--steps", "--batch", "--lr", "--dim", "--depth", "--seed", "--patch"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq demo-train --out DIR [--steps N] [--batch B] [--lr LR] [--dim D] [--depth L] [--patch P] [--seed "
        "S]\n\n"
        "Trains the tiny demo ViT (64x64, patch 8) on freshly generated shapes and writes\n"
        "model.safetensors + config.json; reports accuracy on held-out generated images.");
    return 0;
  }
  DemoTrainOptions o;
  o.out_dir = a.require("--out");
  o.steps = a.get_int("--steps", o.steps, 1, 10000000);
  o.batch = static_cast<int>(a.get_int("--batch", o.batch, 1, 4096));
  o.lr = a.get_double("--lr", o.lr, 1e-6, 1.0);
  o.embed_dim = static_cast<int>(a.get_int("--dim", o.embed_dim, 16, 1024));
  o.depth = static_cast<int>(a.get_int("--depth", o.depth, 1, 48));
  o.patch_size = static_cast<int>(a.get_int("--patch", o.patch_size, 2, 64));
  if (o.image_size % o.patch_size) throw UsageError("--patch must divide the image size 64");
  o.seed = static_cast<uint64_t>(a.get_int("--seed", o.seed, 0, 1LL << 40));
  ProgressBar bar("steps");
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  DemoTrainResult r = train_demo_model(o, job);
  bar.finish();
  std::printf("trained %lld steps in %.1f s; final loss %.4f; held-out top-1 %.2f%% (%lld images)\n",
              (long long)r.steps, r.seconds, r.final_loss, r.heldout_top1, (long long)o.heldout_count);
  return 0;
}

void print_eval(const char* name, const EvalResult& r) {
  std::printf("%-22s top-1 %6.2f%%  top-5 %6.2f%%  (%lld images)\n", name, r.top1_pct(), r.top5_pct(),
              (long long)r.labeled);
}

int cmd_compress(int argc_in, char** argv_in) {
  // A session file (written by the workbench) supplies every flag the command line leaves out.
  std::vector<std::string> words(argv_in, argv_in + argc_in);
  api::ConstraintMap session_constraints;
  for (int i = 2; i + 1 < argc_in; ++i)
    if (std::string(argv_in[i]) == "--session") {
      const api::SessionFile sf = api::load_session_file(argv_in[i + 1]);
      session_constraints = sf.constraints;
      const std::set<std::string> given(words.begin(), words.end());
      auto add = [&](const std::string& flag, const std::string& value) {
        if (!value.empty() && !given.count(flag)) words.insert(words.end(), {flag, value});
      };
      add("--model", sf.model_path);
      add("--calib", sf.images);
      add("--calib-labels", sf.labels);
      add("--eval", sf.eval_images);
      add("--labels", sf.eval_labels);
      add("--cache", sf.cache_dir);
      add("--images", std::to_string(sf.settings.calibration_images));
      add("--lfh-images", std::to_string(sf.settings.lfh_images));
      add("--projections", std::to_string(sf.settings.projections));
      add("--anchors", std::to_string(sf.settings.anchors));
      add("--seed", std::to_string(sf.settings.seed));
      if (sf.settings.estimate && !given.count("--estimate")) words.push_back("--estimate");
      if (!given.count("--avg-bits") && !given.count("--ratio")) add("--budget-bytes", std::to_string(sf.budget_bytes));
    }
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  const int argc = static_cast<int>(argv.size());
  Args a(argc, argv.data(), 2,
         {"--model",       "--calib",    "--calib-labels", "--avg-bits",     "--images",          "--lfh-images",
          "--projections", "--anchors",  "--eval",         "--labels",       "--limit",           "--seed",
          "--out",         "--cache",    "--budget-bytes", "--ratio",        "--constraints",     "--lfh-batch",
          "--session",     "--act-bits", "--round-iters",  "--round-images", "--round-checkpoint"},
         {"--uniform", "--estimate", "--lfh-as-coded", "--plain-svd", "--mse", "--swapped-size", "--refit", "--round",
          "--act-mp", "--no-ridge"});
  if (a.help()) {
    std::puts(
        "usage: lorq compress --model M --calib DIR (--avg-bits B | --budget-bytes N | --ratio R) [--images N] "
        "[--lfh-images N] [--projections P]\n"
        "                     [--lfh-batch P] [--constraints FILE] [--refit] [--out DIR] [--cache DIR]\n"
        "                     [--anchors K] [--estimate] [--eval DIR [--labels CSV] [--limit N]] [--uniform] [--seed "
        "S]\n"
        "                     [--act-bits 4|6|8 [--act-mp] [--no-ridge]] [--round [--round-iters N] [--round-images "
        "N]]\n"
        "                     [--session FILE]\n\n"
        "Mixed low-rank + quantization under a budget of B average bits per compressed weight (spec §2.5).\n"
        "Prints per layer the chosen option, bytes and predicted error, and with --eval the measured top-1/top-5\n"
        "of the float and compressed models (and, with --uniform, of uniform per-row Q(round(B))).\n"
        "--estimate: global errors from the label-free Hessian instead of re-running the network (much faster).\n"
        "--out: export lorq-config.json + compressed.safetensors (+ config.json); 'lorq eval --model DIR' loads it.\n"
        "--anchors: measured ranks per factor-bit pair (default 3 on CPU; the spec uses 5).\n"
        "--cache: keep the analysis (LFH, candidates, errors) in DIR; a re-run with another budget is instant.\n"
        "--constraints: JSON pins / minimum bits / maximum rank / exclusions (q8 or float) / layer groups, e.g.\n"
        "  {\"layers\": {\"head\": {\"exclude\": \"float\"}, \"blocks.0.attn.qkv\": {\"pin\": \"Q8\"}},\n"
        "   \"groups\": [[\"blocks.0.mlp.fc1\", \"blocks.1.mlp.fc1\"]]}\n"
        "--refit: the final per-layer compression of spec §9 (low-rank factor ranges refitted for the chosen rank).\n"
        "--lfh-batch: projections back-propagated together (default 32; lower it to save memory on big models).\n"
        "--act-bits: quantize activations too (spec §8: per-tensor, log√2 after softmax, LayerNorm folding, ridge\n"
        "  correction unless --no-ridge; --act-mp: per-tensor bits under the peak-tensor memory, §8.4). The layers "
        "are\n"
        "  then refitted to the rebuilt weights (§9) and the export carries the activation quantizers.\n"
        "--round: low-rank-aware adaptive rounding (§10; default 500 iterations per layer on 128 images, ~7 min for\n"
        "  DeiT-Tiny here); finished layers are checkpointed (--round-checkpoint, default CACHE/rounding.safetensors)\n"
        "  so an interrupted run resumes. Rounding images are left out of --eval like the calibration images.\n"
        "--session: take the model, images, settings, budget and constraints of a workbench session file.\n"
        "Parity options (the reference implementation's behaviour): --lfh-as-coded (never-reset gradient\n"
        "accumulation), --swapped-size (swapped low-rank size in the filter and Pareto front); ablations:\n"
        "--plain-svd (no LFH weighting of the SVD), --mse (plain MSE instead of LFH-weighted errors).");
    return 0;
  }
  const std::string model_path = a.require("--model");
  auto model = load_model(model_path);
  CompressSettings s;
  s.calibration.images = static_cast<int>(a.get_int("--images", 32, 1, 100000));
  s.calibration.seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, 1LL << 40));
  s.lfh_images = static_cast<int>(a.get_int("--lfh-images", 8, 1, 100000));
  s.lfh.projections = static_cast<int>(a.get_int("--projections", 32, 1, 10000));
  s.lfh.projection_batch = static_cast<int>(a.get_int("--lfh-batch", 32, 1, 10000));
  s.global_error.anchors = static_cast<int>(a.get_int("--anchors", 3, 2, 1000));
  s.global_error.estimate = a.has("--estimate");
  s.lfh.as_coded_accumulation = a.has("--lfh-as-coded");
  s.candidates.weighted_svd = !a.has("--plain-svd");
  s.candidates.hessian_weighted = !a.has("--mse");
  s.candidates.swapped_lr_size = a.has("--swapped-size");
  const int budget_flags = a.has("--avg-bits") + a.has("--budget-bytes") + a.has("--ratio");
  if (budget_flags != 1) throw UsageError("give the budget once: --avg-bits, --budget-bytes or --ratio");
  ImageSet calib = open_image_set(a.require("--calib"), a.get("--calib-labels"), model->config().label_names);
  warn_skipped(calib.skipped, "non-image files");

  ProgressBar bar("units");
  std::string stage;
  JobControl job;
  job.progress = [&](const Progress& p) {
    if (p.stage != stage) {
      bar.finish();
      stage = p.stage;
    }
    bar.update(p);
  };
  CompressionAnalysis analysis = a.has("--cache")
                                     ? analyze_model_cached(*model, model_path, calib, s, a.get("--cache"), job)
                                     : analyze_model(*model, calib, s, job);
  bar.finish();
  for (const auto& w : analysis.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  for (const auto& [name, sec] : analysis.stage_seconds) std::printf("stage %-14s %8.1f s\n", name.c_str(), sec);

  // The budget counts compressed-layer weights only (spec §2.5): B average bits = B/8 bytes per weight; a ratio is
  // against their fp32 size.
  const int64_t params = analysis.compressible_params;
  int64_t budget = 0;
  if (a.has("--avg-bits"))
    budget = static_cast<int64_t>(std::floor(a.get_double("--avg-bits", 0, 0.01, 32) * params / 8.0));
  if (a.has("--budget-bytes")) budget = a.get_int("--budget-bytes", 0, 1, 1LL << 50);
  if (a.has("--ratio")) budget = static_cast<int64_t>(std::floor(4.0 * params / a.get_double("--ratio", 0, 1, 1e6)));
  const double avg_bits = 8.0 * budget / params;
  Constraints constraints;
  if (a.has("--constraints")) {
    constraints = read_constraints(a.get("--constraints"), analysis);
  } else {
    for (const auto& [name, c] : session_constraints)
      constraints[name] = {c.pinned_option, c.min_bits, c.max_rank,
                           c.excluded == api::Exclusion::Q8      ? Exclusion::Q8
                           : c.excluded == api::Exclusion::Float ? Exclusion::Float
                                                                 : Exclusion::None};
  }
  Allocation alloc = allocate(analysis, budget, constraints);
  std::printf("\n%-26s %-22s %12s %14s\n", "layer", "choice", "bytes", "pred. error");
  for (size_t i = 0; i < analysis.layers.size(); ++i) {
    const LayerCandidates& l = analysis.layers[i];
    if (alloc.choice[i] == kKeepFloat) {
      std::printf("%-26s %-22s %12lld %14.4g\n", l.layer.c_str(), "F32 (kept)",
                  (long long)(4 * l.out_features * l.in_features), 0.0);
      continue;
    }
    const LayerOption& o = l.options[alloc.choice[i]];
    std::printf("%-26s %-22s %12lld %14.4g\n", l.layer.c_str(), o.label().c_str(), (long long)o.bytes, o.error);
  }
  std::printf("total: %lld of %lld budget bytes (%.3f average bits, %.2fx vs fp32), predicted error %.4g\n",
              (long long)alloc.bytes, (long long)budget, 8.0 * alloc.bytes / analysis.compressible_params,
              32.0 * analysis.compressible_params / (8.0 * alloc.bytes), alloc.predicted_error);

  // Steps 8-14: activation quantization, the final layers (refit), adaptive rounding, applied to a fresh model.
  FinalModelSettings fs;
  fs.refit = a.has("--refit");
  fs.activations.enabled = a.has("--act-bits");
  fs.activations.bits = static_cast<int>(a.get_int("--act-bits", 8, 2, 8));
  fs.activations.mixed_precision = a.has("--act-mp");
  fs.activations.ridge_regression = !a.has("--no-ridge");
  fs.lfh = s.lfh;
  fs.lfh_images = s.lfh_images;
  fs.round = a.has("--round");
  fs.rounding.iterations = static_cast<int>(a.get_int("--round-iters", fs.rounding.iterations, 1, 1000000));
  fs.rounding.images = static_cast<int>(a.get_int("--round-images", fs.rounding.images, 1, 100000));
  if (fs.round)
    fs.rounding_checkpoint =
        a.get("--round-checkpoint", a.has("--cache") ? a.get("--cache") + "/rounding.safetensors" : "");
  // The analysis' calibration images first, then more of the calibration set when rounding wants more.
  const FinalImages split =
      split_final_images(calib, analysis.calibration_files, fs.round ? static_cast<size_t>(fs.rounding.images) : 0);
  const ImageSet& final_set = split.train;
  ImageBatch final_images = load_batch(final_set, 0, final_set.size(), model->config().preprocessing, 2);
  for (const auto& f : final_images.failed) std::fprintf(stderr, "warning: skipped %s\n", f.c_str());
  FinalModel final_model = build_final_model(model_path, analysis, alloc, final_images.images, fs, job);
  bar.finish();
  for (const auto& [name, sec] : final_model.stage_seconds) std::printf("stage %-27s %8.1f s\n", name.c_str(), sec);
  for (const auto& w : final_model.rounding.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (fs.round) {
    double before = 0, after = 0;
    for (const auto& l : final_model.rounding.layers) {
      before += l.nearest_error;
      after += l.learned_error;
    }
    std::printf("adaptive rounding: %zu layers, summed layer reconstruction error %.4g -> %.4g\n",
                final_model.rounding.layers.size(), before, after);
  }
  if (a.has("--out")) {
    export_compressed(a.get("--out"), *final_model.model, model_path, analysis, alloc, final_model.layers,
                      final_model.activations_quantized ? &final_model.activations : nullptr);
    std::printf("exported to %s (lorq-config.json, compressed.safetensors, config.json)\n", a.get("--out").c_str());
    std::fputs(format_export_size(export_size_breakdown(a.get("--out"))).c_str(), stdout);
  }
  if (a.has("--eval")) {
    ImageSet eval_set = open_image_set(a.get("--eval"), a.get("--labels"), model->config().label_names);
    // Never score on the images the analysis calibrated on.
    std::set<std::string> seen;
    for (const ImageItem& item : final_set.items) seen.insert(item.path);
    const size_t before = eval_set.items.size();
    eval_set.items.erase(std::remove_if(eval_set.items.begin(), eval_set.items.end(),
                                        [&](const ImageItem& i) { return seen.count(i.path) > 0; }),
                         eval_set.items.end());
    if (eval_set.items.size() < before)
      std::printf("evaluating on %zu images (%zu calibration/rounding images left out)\n", eval_set.items.size(),
                  before - eval_set.items.size());
    EvalOptions eo;
    eo.limit = a.get_int("--limit", 0, 0, 1LL << 40);
    EvalResult fr = evaluate(*model, eval_set, eo, job);
    bar.finish();
    EvalResult cr = evaluate(*final_model.model, eval_set, eo, job);
    bar.finish();
    // With rounding, the same configuration with nearest rounding on the same images shows what rounding bought.
    EvalResult nr;
    if (fs.round) {
      FinalModelSettings nearest = fs;
      nearest.round = false;
      FinalModel nm = build_final_model(model_path, analysis, alloc, final_images.images, nearest, job);
      bar.finish();
      nr = evaluate(*nm.model, eval_set, eo, job);
      bar.finish();
    }
    print_eval("float", fr);
    if (fs.round) print_eval("nearest rounding", nr);
    print_eval(fs.activations.enabled ? ("mixed W / A" + std::to_string(fs.activations.bits)).c_str() : "mixed (MLoRQ)",
               cr);
    if (a.has("--uniform")) {
      const int bits = static_cast<int>(std::lround(avg_bits));
      auto uniform = load_model(model_path);
      Allocation u = uniform_allocation(analysis, bits);
      apply_allocation(*uniform, analysis, u);
      EvalResult ur = evaluate(*uniform, eval_set, eo, job);
      bar.finish();
      print_eval(("uniform Q" + std::to_string(bits)).c_str(), ur);
    }
  }
  return 0;
}

int cmd_round(int argc, char** argv) {
  // lorq round --session FILE [--iters N] [...]: compress with adaptive rounding (every compress flag works).
  std::vector<std::string> words{argv[0], "compress"};
  bool help = false;
  for (int i = 2; i < argc; ++i) {
    const std::string w = argv[i];
    help |= w == "--help" || w == "-h";
    words.push_back(w == "--iters" ? "--round-iters" : w);
  }
  if (help) {
    std::puts(
        "usage: lorq round --session FILE [--iters N] [--out DIR] [--eval DIR --labels CSV] [compress options]\n\n"
        "Low-rank-aware adaptive rounding (spec §10) of a workbench session's allocation (or of any 'lorq compress'\n"
        "command line): the same as 'lorq compress ... --round --round-iters N'. See 'lorq compress --help'.");
    return 0;
  }
  words.push_back("--round");
  std::vector<char*> args;
  for (std::string& w : words) args.push_back(w.data());
  return cmd_compress(static_cast<int>(args.size()), args.data());
}

int cmd_fronts(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--calib", "--layer", "--images", "--lfh-images", "--projections", "--anchors"},
         {"--estimate"});
  if (a.help()) {
    std::puts(
        "usage: lorq fronts --model M --calib DIR --layer NAME [--images N] [--lfh-images N] [--projections P]\n"
        "                   [--anchors K] [--estimate]\n\n"
        "Prints one layer's Pareto front: every option with its bytes, average bits, local loss and global error.");
    return 0;
  }
  auto model = load_model(a.require("--model"));
  const std::string layer = a.require("--layer");
  const LinearLayerInfo& info = model->layer(layer);
  ImageSet calib_set = open_image_set(a.require("--calib"), "", model->config().label_names);
  CalibrationSettings cs;
  cs.images = static_cast<int>(a.get_int("--images", 32, 1, 100000));
  LfhOptions lo;
  lo.projections = static_cast<int>(a.get_int("--projections", 32, 1, 10000));
  GlobalErrorSettings gs;
  gs.anchors = static_cast<int>(a.get_int("--anchors", 3, 2, 1000));
  gs.estimate = a.has("--estimate");
  ProgressBar bar("units");
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  Calibration calib = calibrate(*model, calib_set, cs, job);
  bar.finish();
  const int64_t lfh_n = std::min<int64_t>(a.get_int("--lfh-images", 8, 1, 100000), calib.images.size(0));
  auto H = label_free_hessian(*model, calib.images.slice(0, 0, lfh_n), lo, job);
  bar.finish();
  std::vector<LayerCandidates> layers{
      build_layer_candidates(layer, model->weight(layer), H.at(layer), info.low_rank_allowed)};
  measure_global_errors(*model, calib, layers, gs, job, &H);
  bar.finish();
  std::vector<LayerOption> opts = layers[0].options;
  std::sort(opts.begin(), opts.end(), [](const LayerOption& x, const LayerOption& y) { return x.bytes < y.bytes; });
  std::printf("%s (%lldx%lld): %zu options on the front of %lld considered\n", layer.c_str(),
              (long long)info.out_features, (long long)info.in_features, opts.size(),
              (long long)layers[0].candidates_considered);
  std::printf("%-22s %10s %8s %12s %12s %s\n", "option", "bytes", "bits/w", "local loss", "global err", "");
  for (const LayerOption& o : opts)
    std::printf("%-22s %10lld %8.3f %12.4g %12.4g %s\n", o.label().c_str(), (long long)o.bytes,
                8.0 * o.bytes / info.params(), o.local_loss, o.error, o.measured ? "measured" : "interpolated");
  return 0;
}

int cmd_export_onnx(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--out"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq export-onnx --model EXPORT --out model.onnx\n\n"
        "Writes a 'lorq compress --out' export as an ONNX model (opset 21) for standard runtimes: input\n"
        "'pixel_values' [batch, C, H, W] (preprocessed as 'lorq eval' does), output 'logits'. Quantized layers keep\n"
        "their integer codes (UINT4 for 4 bits and fewer, else UINT8) behind a per-row DequantizeLinear feeding\n"
        "the MatMul; low-rank layers are two such matmuls.");
    return 0;
  }
  const OnnxExportSummary s = export_onnx(a.require("--model"), a.require("--out"));
  std::printf(
      "wrote %s: %lld bytes (%.3f MB); %d quantized, %d low-rank, %d float layers; codes %lld B UINT4, %lld B "
      "UINT8, %lld B INT32\n",
      a.get("--out").c_str(), static_cast<long long>(s.file_bytes), s.file_bytes / 1e6, s.quantized_layers,
      s.low_rank_layers, s.float_layers, static_cast<long long>(s.uint4_bytes), static_cast<long long>(s.uint8_bytes),
      static_cast<long long>(s.int32_bytes));
  return 0;
}

int cmd_export_timm(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--out"}, {});
  if (a.help()) {
    std::puts(
        "usage: lorq export-timm --model EXPORT --out DIR\n\n"
        "Writes an export's dequantized weights (low-rank layers multiplied back out) as an ordinary timm\n"
        "checkpoint: DIR/model.safetensors (float32) and DIR/config.json. It is NOT smaller than the float model.");
    return 0;
  }
  export_timm_checkpoint(a.require("--model"), a.require("--out"));
  std::printf("wrote %s/model.safetensors and %s/config.json\n", a.get("--out").c_str(), a.get("--out").c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" || std::string(argv[1]) == "help") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  init_threads();
  const std::map<std::string, int (*)(int, char**)> commands = {
      {"inspect", cmd_inspect},       {"eval", cmd_eval},
      {"predict", cmd_predict},       {"demo-data", cmd_demo_data},
      {"demo-train", cmd_demo_train}, {"compress", cmd_compress},
      {"fronts", cmd_fronts},         {"round", cmd_round},
      {"export-onnx", cmd_export_onnx}, {"export-timm", cmd_export_timm},
  };
  auto it = commands.find(argv[1]);
  if (it == commands.end()) {
    std::fprintf(stderr, "lorq: unknown command '%s'\n\n%s", argv[1], kUsage);
    return 2;
  }
  try {
    return it->second(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "lorq %s: %s (see 'lorq %s --help')\n", argv[1], e.what(), argv[1]);
    return 2;
  } catch (const Cancelled&) {
    std::fprintf(stderr, "lorq %s: cancelled\n", argv[1]);
    return 130;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lorq %s: error: %s\n", argv[1], e.what());
    return 1;
  }
}
