// lorq compare-methods: at the same weight memory and the same calibration images, uniform per-row quantization,
// MLoRQ (nearest rounding), MLoRQ with adaptive rounding and LRA-QViT, in one table (weight bytes, average bits,
// the metric float vs compressed, the time each took). A front end of run_method_comparison
// (lorq/session/method_comparison.h), the engine the workbench's Methods view runs too.
#include "cmd_compare_methods.h"

#include <algorithm>
#include <cstdio>

#include "args.h"
#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/session/method_comparison.h"
#include "progress_bar.h"

namespace lorq::cli {

namespace {

const char* kHelp =
    "usage: lorq compare-methods --model M --calib DIR --eval DIR [--labels CSV] (--avg-bits B | --budget-bytes N)\n"
    "                            [--act-bits A] [--images N] [--estimate] [--cache DIR] [--limit N]\n"
    "                            [--lraqvit-steps N] [--lraqvit-wads-steps N] [--round-iters N] [--constraints "
    "FILE]\n\n"
    "Compresses the model with every method at the same weight budget (average bits over the compressible layers, or\n"
    "bytes) and the same calibration images (--images, default 32), and prints one table: method, weight bytes,\n"
    "average bits, the task metric (float vs compressed, on --eval without the calibration/rounding images) and the\n"
    "time each method took (MLoRQ's includes its analysis). --act-bits quantizes activations too (MLoRQ: 4, 6 or 8,\n"
    "static per tensor; LRA-QViT: dynamic per token). Methods: uniform Q(b) per row (b the largest of 2,3,4,6,8\n"
    "within the budget), MLoRQ nearest rounding, MLoRQ + adaptive rounding, LRA-QViT (fixed ranks r = k/2 on qkv,\n"
    "fc1, fc2; its weight bits are the largest of 8,6,4,3,2 that fit, so it may use less than the budget).\n"
    "--constraints FILE: the MLoRQ rows' per-layer constraints and groups (the schema of `lorq compress\n"
    "--constraints`; the workbench's Methods view passes the session's). 'MLoRQ + LRA-QViT blocks' is MLoRQ's\n"
    "allocation finalized with the LRA-QViT building blocks (per-token activations and WADS with --act-bits, and\n"
    "recovery of the float biases and norms by distillation), nearest rounding.";

}  // namespace

int cmd_compare_methods(int argc, char** argv) {
  Args a(argc, argv, 2,
         {"--model", "--calib", "--calib-labels", "--eval", "--labels", "--avg-bits", "--budget-bytes", "--act-bits",
          "--images", "--cache", "--limit", "--constraints", "--lraqvit-steps", "--lraqvit-wads-steps", "--round-iters",
          "--seed"},
         {"--estimate"});
  if (a.help()) {
    std::puts(kHelp);
    return 0;
  }
  api::MethodComparisonSettings s;
  s.model_path = a.require("--model");
  s.calib_images = a.require("--calib");
  s.calib_labels = a.get("--calib-labels");
  s.eval_images = a.require("--eval");
  s.eval_labels = a.get("--labels");
  s.cache_dir = a.get("--cache");
  if (a.has("--constraints")) {
    s.mlorq_constraints_source = a.get("--constraints");
    s.mlorq_constraints_json = read_text_file(s.mlorq_constraints_source);  // a missing file fails before the analysis
  }
  if (a.has("--avg-bits") == a.has("--budget-bytes")) throw UsageError("give one of --avg-bits B or --budget-bytes N");
  s.avg_bits = a.get_double("--avg-bits", 0, 0.01, 32);
  s.budget_bytes = a.get_int("--budget-bytes", 0, 1, 1LL << 50);
  s.act_bits = static_cast<int>(a.get_int("--act-bits", 0, 0, 8));
  if (s.act_bits != 0 && s.act_bits != 4 && s.act_bits != 6 && s.act_bits != 8)
    throw UsageError("--act-bits must be 0 (weights only), 4, 6 or 8");
  s.limit = a.get_int("--limit", 0, 0, 1LL << 40);
  s.analysis.calibration_images = static_cast<int>(a.get_int("--images", 32, 1, 1 << 20));
  s.analysis.lfh_images = std::min(s.analysis.lfh_images, s.analysis.calibration_images);
  s.analysis.estimate = a.has("--estimate");
  s.analysis.seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, 1LL << 62));
  s.lraqvit_steps = static_cast<int>(a.get_int("--lraqvit-steps", -1, 1, 1 << 24));
  s.lraqvit_wads_steps = static_cast<int>(a.get_int("--lraqvit-wads-steps", -1, 0, 1 << 20));
  s.round_iterations = static_cast<int>(a.get_int("--round-iters", s.round_iterations, 1, 1 << 24));

  ProgressBar bar("units");
  JobControl job;
  std::string stage;
  job.progress = [&](const Progress& p) {
    if (p.stage != stage) {
      bar.finish();
      stage = p.stage;
    }
    bar.update(p);
  };
  const api::MethodComparison result = api::run_method_comparison(s, job);
  bar.finish();
  std::printf("\n%s", result.table_text().c_str());
  return 0;
}

}  // namespace lorq::cli
