// lorq: the command-line front end. Parses arguments, calls the core engine, prints results.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "args.h"
#include "cmd_baseline.h"
#include "cmd_compare_methods.h"
#include "cmd_lraqvit.h"
#include "cmd_sweep.h"
#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/demo/demo.h"
#include "lorq/demo/detector_trainer.h"
#include "lorq/demo/scenes.h"
#include "lorq/demo/segmenter_trainer.h"
#include "lorq/demo/shapes_dataset.h"
#include "lorq/io/export.h"
#include "lorq/io/export_size.h"
#include "lorq/io/images.h"
#include "lorq/io/onnx_export.h"
#include "lorq/io/timm_export.h"
#include "lorq/models/model.h"
#include "lorq/session/analysis_progress.h"
#include "lorq/session/api.h"
#include "lorq/session/image_check.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/tasks/predict.h"
#include "progress_bar.h"

using namespace lorq;
using lorq::cli::Args;
using lorq::cli::HelpRequested;
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
    "  eval         a model's metric on an image set (top-1/top-5, box mAP, mIoU)\n"
    "  predict      classes, boxes or label maps for images (--json for scripts)\n"
    "  compress     MLoRQ compression under a memory budget (weights, optionally activations and rounding)\n"
    "  fronts       one layer's Pareto front (options, sizes, errors)\n"
    "  sweep        measured accuracy at several budgets beside the predicted error (2:8:0.5 average bits)\n"
    "  round        adaptive rounding of a workbench session (compress --round)\n"
    "  lraqvit      the LRA-QViT method: low rank + distillation recovery + W8A8 per-token quantization\n"
    "  compare-methods  uniform, MLoRQ, MLoRQ + rounding and LRA-QViT at one weight budget, in one table\n"
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
  std::string dims;
  for (const auto& [name, value] : model->dimensions())
    dims += (dims.empty() ? "" : ", ") + name + " " + std::to_string(value);
  std::printf("model: %s  (%s, %s, %d labels; %s)\n", model->architecture().c_str(), model->family().c_str(),
              task_name(model->task()), model->num_labels(), dims.c_str());
  int width = 26;  // Hugging Face names ("vit.encoder.layer.11.attention.attention.query") are longer than timm's
  for (const auto& l : model->linear_layers()) width = std::max(width, static_cast<int>(l.name.size()));
  std::printf("%-*s %-16s %12s %10s %s\n", width, "layer", "shape", "params", "fp32 MB", "low rank");
  int64_t total = 0;
  for (const auto& l : model->linear_layers()) {
    std::string shape = std::to_string(l.out_features) + "x" + std::to_string(l.in_features);
    std::printf("%-*s %-16s %12lld %10.3f %s\n", width, l.name.c_str(), shape.c_str(), (long long)l.params(),
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
  Args a(argc, argv, 2, {"--model", "--images", "--labels", "--limit", "--batch"}, {"--include-calibration"});
  if (a.help()) {
    std::puts(
        "usage: lorq eval --model M --images DIR [--labels CSV] [--limit N] [--batch B] [--include-calibration]\n\n"
        "The task's metric with the model's eval preprocessing: top-1/top-5 (classifier), box mAP@[.5:.95] and\n"
        "mAP@.5 (detector), mIoU and pixel accuracy (segmenter). Labels come from --labels (file,class_index[,x0,y0,\n"
        "x1,y1]), a labels.csv in or beside DIR, class sub-folders, YOLO label files (DIR = .../images/..., labels in\n"
        ".../labels/...) or label-map PNGs (.../annotations/...); without labels only throughput is reported. An export made by 'lorq compress --out' records its calibration images: they are left out (as\n"
        "compress left them out), unless --include-calibration.");
    return 0;
  }
  const std::string model_path = a.require("--model");
  EvalOptions o;
  o.limit = a.get_int("--limit", 0, 0, 1LL << 40);
  o.batch = static_cast<int>(a.get_int("--batch", 32, 1, 4096));
  auto model = load_model(model_path);
  ImageSet set = open_image_set(a.require("--images"), a.get("--labels"), model->label_names(), model->task());
  warn_skipped(set.skipped, "non-image files");
  if (!a.has("--include-calibration")) {
    const std::vector<std::string> calibration = export_calibration_images(model_path);
    if (!calibration.empty()) {
      const std::set<std::string> seen(calibration.begin(), calibration.end());
      const size_t before = set.items.size();
      set.items.erase(std::remove_if(set.items.begin(), set.items.end(),
                                     [&](const ImageItem& i) {
                                       std::error_code ec;
                                       const std::filesystem::path c = std::filesystem::weakly_canonical(i.path, ec);
                                       return seen.count(ec ? i.path : c.string()) > 0;
                                     }),
                      set.items.end());
      if (set.items.size() < before)
        std::printf("leaving out %zu images the export was calibrated on (--include-calibration keeps them)\n",
                    before - set.items.size());
      if (set.items.empty())
        throw Error(a.require("--images"), "holds no images besides the export's calibration images");
    }
  }
  ProgressBar bar;
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  EvalResult r = evaluate(*model, set, o, job);
  bar.finish();
  warn_skipped(r.failed, "unreadable images");
  std::printf("images: %lld  (%.1f images/s)\n", (long long)r.images, r.images_per_s());
  if (r.labeled) {
    for (const MetricValue& m : r.metrics)
      std::printf("%s: %.2f%s  (%lld labeled images)\n", m.name.c_str(), m.value, m.percent ? "%" : "",
                  (long long)r.labeled);
  } else {
    std::printf("no labels: the %s metric is not measured\n", task_name(model->task()));
  }
  return 0;
}

int cmd_predict(int argc, char** argv) {
  Args a(argc, argv, 2, {"--model", "--top", "--threshold", "--draw", "--mask-out"}, {"--json"});
  if (a.help() || a.positional().empty()) {
    std::puts(
        "usage: lorq predict --model M [--top K] [--threshold T] [--json] [--draw OUT] [--mask-out DIR] IMAGE...\n\n"
        "A classifier prints the top-K (default 5) classes; a detector its detections (score > T, default 0.5 as\n"
        "Hugging Face's post-processing; 0 keeps every detection token) with boxes in the image's pixels; a segmenter\n"
        "the pixels per class. --json: one JSON object per line per image. --draw OUT: the image with the boxes or\n"
        "the coloured mask (OUT is a file for one image, a folder for several). --mask-out DIR: each label map as an\n"
        "8-bit PNG of class indices at the image's size (photo.jpg -> DIR/photo.png).");
    return a.help() ? 0 : 2;
  }
  PredictOptions o;
  o.top_k = static_cast<int>(a.get_int("--top", 5, 1, 1000));
  o.threshold = a.get_double("--threshold", 0.5, 0.0, 1.0);
  const bool json = a.has("--json");
  const std::string draw = a.get("--draw"), mask_out = a.get("--mask-out");
  auto model = load_model(a.require("--model"));
  if (!mask_out.empty() && model->task() != TaskKind::Segmentation)
    throw UsageError("--mask-out needs a segmentation model; " + a.require("--model") + " is a " +
                     task_name(model->task()) + " model");
  namespace fs = std::filesystem;
  const bool draw_to_folder = !draw.empty() && (a.positional().size() > 1 || fs::is_directory(draw));
  std::error_code ec;
  if (draw_to_folder) fs::create_directories(draw, ec);
  if (!mask_out.empty()) fs::create_directories(mask_out, ec);
  int failures = 0;
  for (const std::string& path : a.positional()) {
    try {
      const ImagePrediction p = predict_image(*model, path, o);
      if (json) {
        std::printf("%s\n", prediction_json(path, p).c_str());
      } else {
        std::printf("%s\n", path.c_str());
        for (const Prediction& c : p.top)
          std::printf("  %6.2f%%  %4d  %s\n", 100.0 * c.probability, c.class_index, c.label.c_str());
        for (const Detection& d : p.detections)
          std::printf("  %6.2f%%  %4d  %-16s [%.1f, %.1f, %.1f, %.1f]\n", 100.0 * d.score, d.class_index,
                      d.label.c_str(), d.x0, d.y0, d.x1, d.y1);
        if (p.task == TaskKind::Detection && p.detections.empty()) std::printf("  no detection above %g\n", o.threshold);
        if (p.task == TaskKind::Segmentation) {
          std::map<int, int64_t> counts;
          for (uint8_t c : p.label_map.classes) ++counts[c];
          for (const auto& [c, n] : counts)
            std::printf("  %6.2f%%  %4d  %s\n", 100.0 * n / p.label_map.classes.size(), c, model->label(c).c_str());
        }
      }
      const std::string stem = fs::path(path).stem().string();
      if (!draw.empty()) draw_prediction(path, p, draw_to_folder ? (fs::path(draw) / (stem + ".png")).string() : draw);
      if (!mask_out.empty()) write_label_map_png(p.label_map, (fs::path(mask_out) / (stem + ".png")).string());
    } catch (const Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      ++failures;
    }
  }
  return failures ? 1 : 0;
}

int cmd_demo_data(int argc, char** argv) {
  Args a(argc, argv, 2, {"--out", "--count", "--seed", "--size"}, {"--scenes"});
  if (a.help()) {
    std::puts(
        "usage: lorq demo-data --out DIR [--count N] [--seed S] [--size PX] [--scenes]\n\n"
        "Writes the procedural shapes set: images/, masks/ and labels.csv (class and box per image).\n"
        "--scenes: the multi-object scenes instead (default 128 px): images/, labels/ (YOLO), annotations/ (label\n"
        "maps) and labels.csv (one row per object).");
    return 0;
  }
  if (a.has("--scenes")) {
    ScenesDatasetSpec s;
    s.count = a.get_int("--count", s.count, 1, 10000000);
    s.seed = static_cast<uint64_t>(a.get_int("--seed", 1, 0, 1LL << 62));
    s.size = static_cast<int>(a.get_int("--size", s.size, 32, 1024));
    write_scenes_dataset(a.require("--out"), s);
    std::printf("wrote %lld scenes to %s\n", (long long)s.count, a.require("--out").c_str());
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

// `lorq demo-train --task detect`: the tiny demo YOLOS on generated scenes.
int demo_train_detector(const Args& a) {
  DetectorTrainOptions o;
  o.out_dir = a.require("--out");
  o.steps = a.get_int("--steps", o.steps, 1, 10000000);
  o.batch = static_cast<int>(a.get_int("--batch", o.batch, 1, 4096));
  o.lr = a.get_double("--lr", o.lr, 1e-6, 1.0);
  o.hidden_size = static_cast<int>(a.get_int("--dim", o.hidden_size, 16, 1024));
  o.heads = std::max(1, o.hidden_size / 32);
  o.depth = static_cast<int>(a.get_int("--depth", o.depth, 1, 48));
  o.patch_size = static_cast<int>(a.get_int("--patch", o.patch_size, 2, 64));
  if (o.image_size % o.patch_size) throw UsageError("--patch must divide the image size 128");
  o.seed = static_cast<uint64_t>(a.get_int("--seed", o.seed, 0, 1LL << 40));
  o.resume = a.has("--resume");
  o.backbone = a.get("--backbone", "");
  o.detection_tokens = static_cast<int>(a.get_int("--queries", o.detection_tokens, 4, 400));
  o.anchor_cost = a.get_double("--anchor-cost", o.anchor_cost, 0.0, 1000.0);
  o.init = a.get("--init", "");
  o.patch_class_loss = a.get_double("--patch-loss", o.patch_class_loss, 0.0, 1000.0);
  ProgressBar bar("steps");
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  const DetectorTrainResult r = train_demo_detector(o, job);
  bar.finish();
  std::printf("trained %lld steps (%lld in this run, %.2f steps/s) in %.1f s; final loss %.4f\n", (long long)r.steps,
              (long long)(r.steps - r.resumed_from), r.steps_per_second, r.seconds, r.final_loss);
  std::printf("held-out scenes (%lld): mAP@.5 %.4f  mAP@[.5:.95] %.4f\n", (long long)o.heldout_count, r.heldout_map50,
              r.heldout_map);
  return 0;
}

// `lorq demo-train --task segment`: the tiny demo SegFormer on generated scenes.
int demo_train_segmenter(const Args& a) {
  SegmenterTrainOptions o;
  o.out_dir = a.require("--out");
  o.steps = a.get_int("--steps", o.steps, 1, 10000000);
  o.batch = static_cast<int>(a.get_int("--batch", o.batch, 1, 4096));
  o.lr = a.get_double("--lr", o.lr, 1e-6, 1.0);
  o.seed = static_cast<uint64_t>(a.get_int("--seed", o.seed, 0, 1LL << 40));
  o.resume = a.has("--resume");
  ProgressBar bar("steps");
  JobControl job;
  job.progress = [&](const Progress& p) { bar.update(p); };
  const SegmenterTrainResult r = train_demo_segmenter(o, job);
  bar.finish();
  std::printf("trained %lld steps (%lld in this run, %.2f steps/s) in %.1f s; final loss %.4f\n", (long long)r.steps,
              (long long)(r.steps - r.resumed_from), r.steps_per_second, r.seconds, r.final_loss);
  std::printf("held-out scenes (%lld): mIoU %.4f  pixel accuracy %.4f\n", (long long)o.heldout_count, r.heldout_miou,
              r.heldout_pixel_accuracy);
  return 0;
}

int cmd_demo_train(int argc, char** argv) {
  Args a(argc, argv, 2,
         {"--out", "--steps", "--batch", "--lr", "--dim", "--depth", "--seed", "--patch", "--task", "--backbone", "--queries",
          "--anchor-cost", "--init", "--patch-loss"},
         {"--resume"});
  if (a.help()) {
    std::puts(
        "usage: lorq demo-train --out DIR [--task classify|detect|segment] [--steps N] [--batch B] [--lr LR]\n"
        "                       [--dim D] [--depth L] [--patch P] [--seed S] [--resume] [--backbone VIT_DIR]\n\n"
        "classify (default): trains the tiny demo ViT (64x64) on freshly generated shapes and writes\n"
        "model.safetensors + config.json; reports accuracy on held-out generated images.\n"
        "detect: trains the tiny demo YOLOS (128x128, Hugging Face layout) on freshly generated scenes and writes\n"
        "config.json + preprocessor_config.json + model.safetensors; reports box mAP on held-out scenes.\n"
        "It checkpoints into DIR/checkpoint every 200 steps; --resume continues from there. --backbone starts the\n"
        "encoder from a timm ViT (e.g. datasets/demo-vit), whose width, depth and patch size then apply.\n"
        "--queries Q (default 16): detection tokens, one per cell of an even grid; --anchor-cost C (default 5): how\n"
        "strongly the matching prefers the query of an object's cell (0: the plain Hungarian matcher of DETR/HF).\n"
        "--init DETECTOR_DIR continues training a demo detector with a fresh schedule (its architecture applies).\n"
        "--patch-loss W (default 1): weight of the training-only loss that teaches each patch token its patch's\n"
        "classes from the scene's label map (0: off).\n"
        "segment: trains the tiny demo SegFormer (128x128, Hugging Face layout) on the same scenes' label maps;\n"
        "reports mIoU and pixel accuracy on held-out scenes; checkpoints and --resume as detect.");
    return 0;
  }
  const std::string task = a.get("--task", "classify");
  if (task == "detect") return demo_train_detector(a);
  if (task == "segment") {
    if (a.has("--dim") || a.has("--depth") || a.has("--patch") || a.has("--backbone") || a.has("--queries") ||
        a.has("--anchor-cost") || a.has("--init") || a.has("--patch-loss"))
      throw UsageError(
          "--dim, --depth, --patch, --backbone, --queries, --anchor-cost, --init and --patch-loss are not for --task "
          "segment");
    return demo_train_segmenter(a);
  }
  if (task != "classify") throw UsageError("--task must be classify, detect or segment, got '" + task + "'");
  if (a.has("--resume") || a.has("--backbone") || a.has("--queries") || a.has("--anchor-cost") || a.has("--init") ||
      a.has("--patch-loss"))
    throw UsageError("--resume, --backbone, --queries, --anchor-cost, --init and --patch-loss are not for --task classify");
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

void print_eval(const std::string& name, const api::EvalSummary& r) {
  std::string figures;
  for (const MetricValue& m : r.metrics) {
    char f[64];
    std::snprintf(f, sizeof f, "%s %6.2f%s", m.name.c_str(), m.value, m.percent ? "%" : "");
    figures += (figures.empty() ? "" : "  ") + std::string(f);
  }
  if (figures.empty()) figures = "no labels";
  std::printf("%-22s %s  (%lld images)", name.c_str(), figures.c_str(), (long long)r.labeled);
  if (r.has_fidelity)
    std::printf("  vs float: same top-1 %.2f%%, output NSR %.4g, KL %.4g", r.agreement_pct, r.output_nsr, r.kl);
  std::printf("\n");
}

// A progress bar that starts a new line whenever the stage changes.
struct StageProgress {
  ProgressBar bar{"units"};
  std::string stage;
  JobControl job() {
    JobControl j;
    j.progress = [this](const Progress& p) {
      if (p.stage != stage) {
        bar.finish();
        stage = p.stage;
      }
      bar.update(p);
    };
    return j;
  }
};

// Everything `lorq compress` takes, parsed and checked before any long work starts.
struct CompressRequest {
  std::string model, calib, calib_labels, cache, out, eval, eval_labels, constraints_file, session_file;
  std::string constraints_json, constraints_source;
  api::AnalysisSettings analysis;
  api::FinalSettings final;
  double avg_bits = 0, ratio = 0;
  int64_t budget_bytes = 0;
  int64_t limit = 0;
  bool uniform = false;
  bool baseline = false;
};

CompressRequest parse_compress(int argc_in, char** argv_in) {
  // A session file (written by the workbench) supplies every flag the command line leaves out.
  std::vector<std::string> words(argv_in, argv_in + argc_in);
  CompressRequest r;
  for (int i = 2; i + 1 < argc_in; ++i)
    if (std::string(argv_in[i]) == "--session") {
      r.session_file = argv_in[i + 1];
      const api::SessionFile sf = api::load_session_file(r.session_file);
      r.constraints_json = sf.constraints_json;
      r.constraints_source = r.session_file;
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
      const api::AnalysisSettings& s = sf.settings;
      add("--images", std::to_string(s.calibration_images));
      add("--lfh-images", std::to_string(s.lfh_images));
      add("--projections", std::to_string(s.projections));
      add("--anchors", std::to_string(s.anchors));
      add("--seed", std::to_string(s.seed));
      add("--lfh-batch", std::to_string(s.lfh_batch));
      auto flag = [&](bool on, const char* name) {
        if (on && !given.count(name)) words.push_back(name);
      };
      flag(s.estimate, "--estimate");
      flag(s.lfh_as_coded, "--lfh-as-coded");
      flag(!s.weighted_svd, "--plain-svd");
      flag(!s.hessian_weighted, "--mse");
      flag(s.swapped_lr_size, "--swapped-size");
      flag(!s.calibrated_errors, "--measure-all-errors");
      add("--quantizer", s.quantizer);
      if (s.quantizer == "gptq" && s.gptq_images > 0) add("--gptq-images", std::to_string(s.gptq_images));
      if (s.quantizer == "gptq")
        add("--gptq-damping", s.gptq_damping > 0 ? std::to_string(s.gptq_damping) : std::string("auto"));
      if (!given.count("--avg-bits") && !given.count("--ratio")) add("--budget-bytes", std::to_string(sf.budget_bytes));
    }
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  Args a(
      static_cast<int>(argv.size()), argv.data(), 2,
      {"--model",         "--calib",       "--calib-labels", "--avg-bits",     "--images",      "--lfh-images",
       "--projections",   "--anchors",     "--eval",         "--labels",       "--limit",       "--seed",
       "--out",           "--cache",       "--budget-bytes", "--ratio",        "--constraints", "--lfh-batch",
       "--session",       "--act-bits",    "--round-iters",  "--round-images", "--round-views", "--round-checkpoint",
       "--quantizer",     "--gptq-images", "--gptq-damping", "--wads-steps",   "--recover",     "--recover-lr",
       "--recover-images"},
      {"--uniform", "--baseline", "--estimate", "--lfh-as-coded", "--plain-svd", "--mse", "--swapped-size", "--refit",
       "--round", "--round-per-layer", "--act-mp", "--no-ridge", "--per-token", "--wads", "--measure-all-errors"});
  if (a.help()) throw HelpRequested();
  r.model = a.require("--model");
  r.calib = a.require("--calib");
  r.calib_labels = a.get("--calib-labels");
  r.cache = a.get("--cache");
  r.out = a.get("--out");
  r.eval = a.get("--eval");
  r.eval_labels = a.get("--labels");
  r.limit = a.get_int("--limit", 0, 0, 1LL << 40);
  r.uniform = a.has("--uniform");
  r.baseline = a.has("--baseline");
  api::AnalysisSettings& s = r.analysis;
  s.calibration_images = static_cast<int>(a.get_int("--images", 32, 1, 100000));
  s.seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, 1LL << 40));
  s.lfh_images = static_cast<int>(a.get_int("--lfh-images", 8, 1, 100000));
  s.projections = static_cast<int>(a.get_int("--projections", 32, 1, 10000));
  s.lfh_batch = static_cast<int>(a.get_int("--lfh-batch", 32, 1, 10000));
  s.anchors = static_cast<int>(a.get_int("--anchors", 3, 2, 1000));
  s.estimate = a.has("--estimate");
  s.lfh_as_coded = a.has("--lfh-as-coded");
  s.weighted_svd = !a.has("--plain-svd");
  s.hessian_weighted = !a.has("--mse");
  s.swapped_lr_size = a.has("--swapped-size");
  s.calibrated_errors = !a.has("--measure-all-errors");
  s.quantizer = a.get("--quantizer", s.quantizer);
  if (s.quantizer != "nearest" && s.quantizer != "gptq")
    throw UsageError("--quantizer must be nearest or gptq, not '" + s.quantizer + "'");
  s.gptq_images = static_cast<int>(a.get_int("--gptq-images", s.gptq_images, 0, 100000));
  if (a.has("--gptq-damping"))
    s.gptq_damping = a.get("--gptq-damping") == "auto" ? 0.0 : a.get_double("--gptq-damping", 0.01, 1e-6, 100.0);
  // --baseline analyses gptq too, so the moment images apply there.
  if (a.has("--gptq-images") && s.quantizer != "gptq" && !r.baseline)
    throw UsageError("--gptq-images needs --quantizer gptq (or --baseline)");
  if (a.has("--gptq-damping") && s.quantizer != "gptq" && !r.baseline)
    throw UsageError("--gptq-damping needs --quantizer gptq (or --baseline)");
  const int budget_flags = a.has("--avg-bits") + a.has("--budget-bytes") + a.has("--ratio");
  if (budget_flags != 1) throw UsageError("give the budget once: --avg-bits, --budget-bytes or --ratio");
  if (a.has("--avg-bits")) r.avg_bits = a.get_double("--avg-bits", 0, 0.01, 32);
  if (a.has("--budget-bytes")) r.budget_bytes = a.get_int("--budget-bytes", 0, 1, 1LL << 50);
  if (a.has("--ratio")) r.ratio = a.get_double("--ratio", 0, 1, 1e6);
  if (a.has("--constraints")) {
    r.constraints_file = a.get("--constraints");
    r.constraints_json = read_text_file(r.constraints_file);  // read now: a missing file fails before the analysis
    r.constraints_source = r.constraints_file;
  }
  api::FinalSettings& f = r.final;
  f.refit = a.has("--refit");
  f.activation_bits = a.has("--act-bits") ? static_cast<int>(a.get_int("--act-bits", 8, 2, 8)) : 0;
  f.activation_mp = a.has("--act-mp");
  f.ridge = !a.has("--no-ridge");
  f.round = a.has("--round");
  f.round_iterations = static_cast<int>(a.get_int("--round-iters", f.round_iterations, 1, 1000000));
  f.round_images = static_cast<int>(a.get_int("--round-images", f.round_images, 1, 100000));
  f.round_views = static_cast<int>(a.get_int("--round-views", f.round_views, 0, 64));
  f.round_per_layer = a.has("--round-per-layer");
  f.round_checkpoint = a.get("--round-checkpoint");
  // LRA-QViT's building blocks (issue 12).
  f.per_token_activations = a.has("--per-token");
  f.wads = a.has("--wads");
  f.wads_steps = static_cast<int>(a.get_int("--wads-steps", f.wads_steps, 0, 100000));
  f.recovery_steps = static_cast<int>(a.get_int("--recover", 0, 1, 1000000));
  f.recovery_lr = a.get_double("--recover-lr", f.recovery_lr, 1e-7, 1.0);
  f.recovery_images = static_cast<int>(a.get_int("--recover-images", f.recovery_images, 1, 100000));
  if ((a.has("--recover-lr") || a.has("--recover-images")) && f.recovery_steps == 0)
    throw UsageError("--recover-lr and --recover-images need --recover N");
  if (f.per_token_activations && f.activation_bits == 0)
    throw UsageError("--per-token quantizes activations: give their bits with --act-bits 4|6|8");
  if (f.per_token_activations && (f.activation_mp || !f.ridge))
    throw UsageError("--act-mp and --no-ridge set static activation quantizers; --per-token has none");
  if (f.wads && f.activation_bits == 0)
    throw UsageError("--wads needs activation quantization (--act-bits 4|6|8): weights alone gain nothing from it");
  if (a.has("--wads-steps") && !f.wads) throw UsageError("--wads-steps needs --wads");
  return r;
}

const char* kCompressHelp =
    "usage: lorq compress --model M --calib DIR (--avg-bits B | --budget-bytes N | --ratio R) [--images N] "
    "[--lfh-images N] [--projections P]\n"
    "                     [--lfh-batch P] [--constraints FILE] [--refit] [--out DIR] [--cache DIR]\n"
    "                     [--anchors K] [--estimate] [--eval DIR [--labels CSV] [--limit N]] [--uniform] [--seed "
    "S]\n"
    "                     [--baseline]\n"
    "                     [--act-bits 4|6|8 [--act-mp] [--no-ridge]]\n"
    "                     [--round [--round-iters N] [--round-images N] [--round-views N] [--round-per-layer]]\n"
    "                     [--per-token] [--wads [--wads-steps N]] [--recover N [--recover-lr LR] [--recover-images "
    "N]]\n"
    "                     [--session FILE]\n\n"
    "Mixed low-rank + quantization under a budget of B average bits per compressed weight (spec §2.5).\n"
    "Prints per layer the chosen option, bytes and predicted error, and with --eval the task's metric\n"
    "of the float and compressed models (and, with --uniform, of uniform per-row Q(round(B))).\n"
    "--estimate: global errors from the label-free Hessian instead of re-running the network (much faster).\n"
    "--out: export lorq-config.json + compressed.safetensors (+ config.json); 'lorq eval --model DIR' loads it.\n"
    "--anchors: measured ranks per factor-bit pair (default 3 on CPU; the spec uses 5).\n"
    "--measure-all-errors: measure every anchor's global error. By default Q2..Q4 and each factor-bit pair's middle\n"
    "  anchor are measured and the other anchors get their LFH estimate times that neighbour's measured/estimated\n"
    "  ratio (DeiT-Tiny: the global error stage in 45% of the time, the same allocations at 3 and 4 bits).\n"
    "--cache: keep the analysis (LFH, candidates, errors) in DIR; a re-run with another budget is instant.\n"
    "--constraints: JSON pins / minimum bits / maximum rank / exclusions (q8 or float) / layer groups, e.g.\n"
    "  {\"layers\": {\"head\": {\"exclude\": \"float\"}, \"blocks.0.attn.qkv\": {\"pin\": \"Q8\"}},\n"
    "   \"groups\": [[\"blocks.0.mlp.fc1\", \"blocks.1.mlp.fc1\"]]}\n"
    "--quantizer gptq|nearest: error-compensating rounding (GPTQ, the default) through each layer's input moment\n"
    "  XᵀX on the calibration images, or nearest rounding (faster: no moments, no cross-fit); the export, rounding\n"
    "  and the workbench use its codes. At 2-3 bits each row picks the clip range that suits the compensation.\n"
    "  Its global errors are cross-fitted (compensated on one half of the calibration images, measured on the other).\n"
    "--gptq-images N: gptq's moments from N images, the calibration images then more of the set (its errors are\n"
    "  still measured on the calibration images alone); they are left out of evaluation like the calibration images\n"
    "  (with --baseline, out of every row's). 128 fits DeiT-Tiny's 3-bit compensation better than the 32 calibration\n"
    "  images alone, for one float pass per 32 images; it needs that many images left over for --eval.\n"
    "--gptq-damping auto|D: gptq's damping, H + D·mean(diag H)·I. auto (the default) cross-validates 0.01, 0.03,\n"
    "  0.1 and 0.3 on the calibration images' halves, as the global errors are (DeiT-Tiny: 0.1 with 32 images,\n"
    "  whose moments a smaller damping overfits, and 0.03 with --gptq-images 128).\n"
    "--baseline: one table of the uniform per-row baseline Q(round(B)), MLoRQ with nearest rounding and MLoRQ\n"
    "  with error compensation (gptq) at the same budget (both quantizers analysed; with --cache each has its own\n"
    "  entry in DIR), with --eval each model's metric on the same held-out images.\n"
    "--refit: the final per-layer compression of spec §9 (low-rank factor ranges refitted for the chosen rank).\n"
    "--lfh-batch: projections back-propagated together (default 32; lower it to save memory on big models).\n"
    "--act-bits: quantize activations too (spec §8: per-tensor, log√2 after softmax, LayerNorm folding, ridge\n"
    "  correction unless --no-ridge; --act-mp: per-tensor bits under the peak-tensor memory, §8.4). The layers "
    "are\n"
    "  then refitted to the rebuilt weights (§9) and the export carries the activation quantizers.\n"
    "--round: low-rank-aware adaptive rounding (§10). By default each block's compressed layers learn their rounding\n"
    "  together against the block's float output (--round-iters 500 steps of 8 images per block; ~5 min for\n"
    "  DeiT-Tiny here); --round-per-layer learns each layer alone against its own output (the spec's way). The\n"
    "  images: --round-images 128 and --round-views 3 augmented crops of each. Half of the loss is on the tokens\n"
    "  the output reads (a classifier's class token, a detector's detection tokens). Finished blocks are\n"
    "  checkpointed (--round-checkpoint, default CACHE/rounding.safetensors) so an interrupted run resumes.\n"
    "  Rounding images are left out of --eval like the calibration images.\n"
    "LRA-QViT's building blocks, after the allocation and before --round (bytes and bits stay the allocation's):\n"
    "--per-token: --act-bits as dynamic per-token quantizers (one scale per token row, also at every low-rank\n"
    "  bottleneck) instead of the static per-tensor ones; the export carries them.\n"
    "--wads: learned per-channel scales (weight-aware, default --wads-steps 100 Adam steps per point) folded into\n"
    "  each LayerNorm and its consumer and into qkv's value rows and proj; the layers are then refitted.\n"
    "--recover N: N distillation steps (8 images each) of the compressed model against the float one, training\n"
    "  its float biases and LayerNorm affines (the codes stay); --recover-lr: its peak learning rate (default\n"
    "  1e-4); --recover-images: the images it trains on (default 128: the calibration images, then more of the\n"
    "  --calib set; left out of --eval like rounding's). Checkpointed in --cache DIR.\n"
    "--session: take the model, images, settings, budget and constraints of a workbench session file.\n"
    "Parity options (the reference implementation's behaviour): --lfh-as-coded (never-reset gradient\n"
    "accumulation), --swapped-size (swapped low-rank size in the filter and Pareto front); ablations:\n"
    "--plain-svd (no LFH weighting of the SVD), --mse (plain MSE instead of LFH-weighted errors).";

void print_baseline_after_eval(api::CompressionSession& session, const Allocation& alloc, const CompressRequest& r,
                               int64_t budget, const api::EvalSummary* fr, const api::EvalSummary* cr,
                               const JobControl& job) {
  cli::BaselineRequest b{r.model, r.calib, r.calib_labels, r.cache, r.eval, r.eval_labels, r.constraints_json,
                         r.constraints_source, r.analysis, r.final, budget, r.limit, fr, cr};
  cli::print_baseline(session, alloc, b, job);
}

// Parse the arguments, drive the Session, print: the workbench drives the same Session the same way.
int cmd_compress(int argc, char** argv) {
  CompressRequest r;
  try {
    r = parse_compress(argc, argv);
  } catch (const HelpRequested&) {
    std::puts(kCompressHelp);
    return 0;
  }
  auto session = api::CompressionSession::open(r.model, r.calib, r.calib_labels, r.analysis, r.cache);
  warn_skipped(session->calibration_set().skipped, "non-image files");
  // Before the analysis starts: fewer usable calibration images than asked (too few files, or undecodable ones).
  const api::CalibrationCheck check = api::check_calibration_images(*session);
  if (!check.ok()) std::fprintf(stderr, "warning: %s\n", check.warning().c_str());
  StageProgress progress;
  const JobControl job = progress.job();
  cli::StagedProgressBar analysis_progress(api::analysis_stage_costs(r.analysis));
  const int64_t params = session->compressible_params();
  const int64_t budget = r.avg_bits > 0 ? session->budget_for_avg_bits(r.avg_bits)
                         : r.ratio > 0  ? session->budget_for_ratio(r.ratio)
                                        : r.budget_bytes;
  // A progressive analysis: the allocation from the LFH-estimated global errors is ready long before the measured
  // errors; say when (the allocation printed below is the measured one).
  double first_allocation_s = -1;
  session->analyze(analysis_progress.job(), [&](const std::shared_ptr<const api::AnalysisRevision>& revision) {
    session->adopt(revision);
    if (first_allocation_s >= 0 || revision->final()) return;
    const Constraints c = r.constraints_json.empty()
                              ? Constraints{}
                              : session->parse_constraints(r.constraints_json, r.constraints_source);
    const Allocation first = session->make_allocator(c)->solve_checked(budget);
    first_allocation_s = revision->seconds();
    std::printf(
        "first allocation after %.1f s, from LFH-estimated global errors (%s): %.3f average bits, "
        "predicted error %.4g\n",
        first_allocation_s, revision->global_errors().text().c_str(), 8.0 * first.bytes / params,
        first.predicted_error);
    std::fflush(stdout);
  });
  analysis_progress.finish();
  for (const auto& w : session->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  for (const auto& name : session->cached_stages())
    std::printf("stage %-21s from the cache %s\n", name.c_str(), r.cache.c_str());
  for (const auto& [name, sec] : session->stage_seconds()) {
    const auto& cached = session->cached_stages();
    if (std::find(cached.begin(), cached.end(), name) == cached.end())
      std::printf("stage %-21s %8.1f s\n", name.c_str(), sec);
  }
  std::printf("global errors: %s\n", session->global_errors().text().c_str());
  if (session->gptq_damping() > 0) {
    std::printf("gptq damping: %g", session->gptq_damping());
    const auto scores = session->gptq_damping_scores();
    if (!scores.empty()) {
      std::printf(" (cross-validated; Q3's out-of-fold output error relative to nearest rounding's:");
      for (const auto& [d, score] : scores) std::printf(" %g: %.4f", d, score);
      std::printf(")");
    }
    std::printf("\n");
  }
  const Constraints constraints =
      r.constraints_json.empty() ? Constraints{} : session->parse_constraints(r.constraints_json, r.constraints_source);
  const Allocation alloc = session->make_allocator(constraints)->solve_checked(budget);
  std::printf("\n%-26s %-22s %12s %14s\n", "layer", "choice", "bytes", "pred. error");
  const auto& layers = session->layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const api::LayerAnalysis& l = layers[i];
    if (alloc.choice[i] == kKeepFloat) {
      std::printf("%-26s %-22s %12lld %14.4g\n", l.name.c_str(), "F32 (kept)", (long long)(4 * l.params), 0.0);
      continue;
    }
    const api::OptionRow& o = l.options[alloc.choice[i]];
    std::printf("%-26s %-22s %12lld %14.4g\n", l.name.c_str(), o.label.c_str(), (long long)o.bytes, o.error);
  }
  std::printf("total: %lld of %lld budget bytes (%.3f average bits, %.2fx vs fp32), predicted error %.4g\n",
              (long long)alloc.bytes, (long long)budget, 8.0 * alloc.bytes / params,
              32.0 * params / (8.0 * alloc.bytes), alloc.predicted_error);

  // Steps 8-14: activation quantization, the final layers (refit), adaptive rounding, applied to a fresh model.
  const api::FinalSummary fin = session->finalize(alloc, r.final, job);
  progress.bar.finish();
  for (const auto& [name, sec] : fin.stage_seconds) std::printf("stage %-27s %8.1f s\n", name.c_str(), sec);
  for (const auto& w : fin.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (r.final.round)
    std::printf("adaptive rounding: %d layers, summed reconstruction error %.4g -> %.4g\n", fin.rounded_layers,
                fin.nearest_error, fin.learned_error);
  if (fin.wads_points > 0)
    std::printf("WADS: %d points, summed weight-aware error %.4g -> %.4g\n", fin.wads_points, fin.wads_error_before,
                fin.wads_error_after);
  if (r.final.recovery_steps > 0)
    std::printf("recovery: distillation loss %.4g -> %.4g\n", fin.recovery_loss_before, fin.recovery_loss_after);
  if (!r.out.empty()) {
    session->export_to(r.out, alloc);
    std::printf("exported to %s (lorq-config.json, compressed.safetensors, config.json)\n", r.out.c_str());
    std::fputs(format_export_size(export_size_breakdown(r.out)).c_str(), stdout);
  }
  if (!r.eval.empty()) {
    const api::EvalSummary fr = session->evaluate_float(r.eval, r.eval_labels, r.limit, job);
    progress.bar.finish();
    if (fr.left_out > 0)
      std::printf("evaluating on %lld images (%lld calibration/moment/rounding images left out)\n",
                  (long long)(fr.images + fr.failed.size()), (long long)fr.left_out);
    const api::EvalSummary cr = session->evaluate_compressed(alloc, r.eval, r.eval_labels, r.limit, job);
    progress.bar.finish();
    // With rounding, the same configuration with nearest rounding on the same images shows what rounding bought.
    api::EvalSummary nr;
    if (r.final.round) {
      api::FinalSettings nearest = r.final;
      nearest.round = false;
      // The rounding images stay out: a final model without rounding would let them back into the evaluation.
      const std::vector<std::string> rounded_on = session->seen_images();
      session->finalize(alloc, nearest, job);
      session->leave_out(rounded_on);
      nr = session->evaluate_compressed(alloc, r.eval, r.eval_labels, r.limit, job);
      progress.bar.finish();
    }
    print_eval("float", fr);
    if (r.final.round) print_eval("nearest rounding", nr);
    std::string label =
        r.final.activation_bits > 0 ? "mixed W / A" + std::to_string(r.final.activation_bits) : "mixed (MLoRQ)";
    if (r.final.per_token_activations) label += " per-token";
    if (r.final.wads) label += " +WADS";
    if (r.final.recovery_steps > 0) label += " +recovery";
    print_eval(label, cr);
    if (r.uniform) {
      const int bits = static_cast<int>(std::lround(8.0 * budget / params));
      const api::EvalSummary ur = session->evaluate_uniform(bits, r.eval, r.eval_labels, r.limit, job);
      progress.bar.finish();
      print_eval("uniform Q" + std::to_string(bits), ur);
    }
    if (r.baseline) print_baseline_after_eval(*session, alloc, r, budget, &fr, &cr, job);
  } else if (r.baseline) {
    print_baseline_after_eval(*session, alloc, r, budget, nullptr, nullptr, job);
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
  api::AnalysisSettings s;
  const std::string model = a.require("--model"), calib = a.require("--calib"), layer = a.require("--layer");
  s.calibration_images = static_cast<int>(a.get_int("--images", 32, 1, 100000));
  s.lfh_images = static_cast<int>(a.get_int("--lfh-images", 8, 1, 100000));
  s.projections = static_cast<int>(a.get_int("--projections", 32, 1, 10000));
  s.anchors = static_cast<int>(a.get_int("--anchors", 3, 2, 1000));
  s.estimate = a.has("--estimate");
  auto session = api::CompressionSession::open(model, calib, "", s, "");
  StageProgress progress;
  api::LayerAnalysis l = session->analyze_layer(layer, progress.job());
  progress.bar.finish();
  std::vector<api::OptionRow> opts = l.options;
  std::sort(opts.begin(), opts.end(),
            [](const api::OptionRow& x, const api::OptionRow& y) { return x.bytes < y.bytes; });
  std::printf("%s (%lldx%lld): %zu options on the front of %lld considered\n", layer.c_str(), (long long)l.out_features,
              (long long)l.in_features, opts.size(), (long long)l.candidates_considered);
  std::printf("%-22s %10s %8s %12s %12s %s\n", "option", "bytes", "bits/w", "local loss", "global err", "");
  for (const api::OptionRow& o : opts)
    std::printf("%-22s %10lld %8.3f %12.4g %12.4g %s\n", o.label.c_str(), (long long)o.bytes, 8.0 * o.bytes / l.params,
                o.local_loss, o.error, o.measured ? "measured" : "interpolated");
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
  if (std::string(argv[1]) == "--version" || std::string(argv[1]) == "version") {
    std::printf("lorq %s\n", LORQ_VERSION);
    return 0;
  }
  init_threads();
  const std::map<std::string, int (*)(int, char**)> commands = {
      {"inspect", cmd_inspect},         {"eval", cmd_eval},
      {"predict", cmd_predict},         {"demo-data", cmd_demo_data},
      {"demo-train", cmd_demo_train},   {"compress", cmd_compress},
      {"fronts", cmd_fronts},           {"round", cmd_round},
      {"export-onnx", cmd_export_onnx}, {"export-timm", cmd_export_timm},
      {"sweep", lorq::cli::cmd_sweep},           {"lraqvit", lorq::cli::cmd_lraqvit},
      {"compare-methods", lorq::cli::cmd_compare_methods},
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
