// lorq sweep: the compressed model's measured metric at several budgets, beside the predicted error and the float
// model (lorq/session/sweep.h). Every argument is checked before the analysis starts.
#include "cmd_sweep.h"

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "args.h"
#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/session/analysis_progress.h"
#include "lorq/session/api.h"
#include "lorq/session/image_check.h"
#include "lorq/session/sweep.h"
#include "progress_bar.h"

namespace lorq::cli {

namespace {

const char* kSweepHelp =
    "usage: lorq sweep --model M --calib DIR --eval DIR [--labels CSV] (--avg-bits LIST | --budget-bytes LIST)\n"
    "                  [--limit N] [--json] [--cache DIR] [--constraints FILE] [--images N] [--lfh-images N]\n"
    "                  [--projections P] [--anchors K] [--estimate] [--seed S] [--quantizer gptq|nearest]\n\n"
    "Analyzes the model once, then evaluates the compressed model at every budget: average bits as START:STOP:STEP\n"
    "(2:8:0.5), a comma list (3,4,6) or one number; or --budget-bytes N[,N...]. Budgets outside the reachable range\n"
    "are clamped to the smallest / largest useful budget (where the optimal predicted error stops falling) and\n"
    "marked. Prints per budget the average bits, budget and actual bytes, predicted error and the measured metric\n"
    "(top-1/top-5), and the float model's on the same images (calibration images left out). --json prints one JSON\n"
    "document instead of the table. --cache keeps the analysis and the measured points in DIR (DIR/sweeps.json), so\n"
    "a re-run, or a finer sweep, only measures the budgets not measured yet.";

std::vector<int64_t> parse_bytes_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  std::string w;
  while (std::getline(in, w, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(w, &used);
      if (used != w.size() || v < 1) throw std::invalid_argument("bad");
      out.push_back(v);
    } catch (const std::exception&) {
      throw UsageError("--budget-bytes expects positive integers separated by commas, got '" + text + "'");
    }
  }
  if (out.empty()) throw UsageError("--budget-bytes: no budget given");
  return out;
}

std::string metric_text(const MetricValue& m) {
  char b[48];
  std::snprintf(b, sizeof b, "%.2f%s", m.value, m.percent ? "%" : "");
  return b;
}

}  // namespace

int cmd_sweep(int argc, char** argv) {
  Args a(argc, argv, 2,
         {"--model", "--calib", "--calib-labels", "--eval", "--labels", "--avg-bits", "--budget-bytes", "--images",
          "--lfh-images", "--projections", "--anchors", "--seed", "--cache", "--limit", "--constraints", "--quantizer"},
         {"--json", "--estimate"});
  if (a.help()) {
    std::puts(kSweepHelp);
    return 0;
  }
  // Everything is checked here, before the analysis (minutes on a real model) starts.
  const std::string model = a.require("--model"), calib = a.require("--calib"), eval = a.require("--eval");
  const std::string labels = a.get("--labels"), cache = a.get("--cache");
  api::SweepRequest request;
  request.eval_images = eval;
  request.eval_labels = labels;
  request.limit = a.get_int("--limit", 0, 0, 1LL << 40);
  if (!a.has("--avg-bits") && !a.has("--budget-bytes")) throw UsageError("give --avg-bits LIST or --budget-bytes LIST");
  if (a.has("--avg-bits")) {
    try {
      request.avg_bits = api::parse_avg_bits_list(a.get("--avg-bits"));
    } catch (const Error& e) {
      throw UsageError(std::string("--avg-bits: ") + e.what());
    }
  }
  if (a.has("--budget-bytes")) request.budget_bytes = parse_bytes_list(a.get("--budget-bytes"));
  api::AnalysisSettings s;
  s.calibration_images = static_cast<int>(a.get_int("--images", 32, 1, 100000));
  s.lfh_images = static_cast<int>(a.get_int("--lfh-images", 8, 1, 100000));
  s.projections = static_cast<int>(a.get_int("--projections", 32, 1, 10000));
  s.anchors = static_cast<int>(a.get_int("--anchors", 3, 2, 1000));
  s.seed = static_cast<uint64_t>(a.get_int("--seed", 0, 0, 1LL << 40));
  s.estimate = a.has("--estimate");
  s.quantizer = a.get("--quantizer", s.quantizer);
  if (s.quantizer != "nearest" && s.quantizer != "gptq")
    throw UsageError("--quantizer must be nearest or gptq, not '" + s.quantizer + "'");
  const std::string constraints_text = a.has("--constraints") ? read_text_file(a.get("--constraints")) : "";
  const api::ImageSetInfo eval_set = api::list_image_set(eval, labels);
  if (eval_set.labeled == 0)
    throw Error(eval, "has no labels: a sweep measures the task's metric (give --labels CSV or class sub-folders)");
  const std::string sweeps_file = cache.empty() ? "" : (std::filesystem::path(cache) / "sweeps.json").string();
  api::SweepCache results;
  if (!sweeps_file.empty() && std::filesystem::exists(sweeps_file)) {
    try {
      results = api::SweepCache::from_json(read_text_file(sweeps_file), sweeps_file);
    } catch (const Error& e) {
      std::fprintf(stderr, "warning: %s (measuring again)\n", e.what());
    }
  }
  const bool json_out = a.has("--json");

  auto session = api::CompressionSession::open(model, calib, a.get("--calib-labels"), s, cache);
  const api::CalibrationCheck check = api::check_calibration_images(*session);
  if (!check.ok()) std::fprintf(stderr, "warning: %s\n", check.warning().c_str());
  StagedProgressBar progress(api::analysis_stage_costs(s));
  session->analyze(progress.job());
  progress.finish();
  for (const auto& w : session->warnings()) std::fprintf(stderr, "warning: %s\n", w.c_str());
  for (const auto& name : session->cached_stages())
    std::fprintf(stderr, "stage %-14s from the cache %s\n", name.c_str(), cache.c_str());
  const Constraints constraints =
      constraints_text.empty() ? Constraints{} : session->parse_constraints(constraints_text, a.get("--constraints"));

  const std::string key = api::sweep_key(*session, constraints, eval, labels, request.limit);
  StagedProgressBar sweep_progress({}, "sweep", "images");
  const api::SweepSeries series = api::run_sweep(
      *session, constraints, request, results.find(key), sweep_progress.job(), [&](const api::SweepSeries& partial) {
        if (sweeps_file.empty()) return;
        results.merge(partial);  // saved after every point: an interrupted sweep keeps what it measured
        write_text_atomically(sweeps_file, results.to_json());
      });
  sweep_progress.finish();

  const int64_t params = session->compressible_params();
  if (json_out) {
    using nlohmann::json;
    auto metrics = [](const std::vector<MetricValue>& ms) {
      json o = json::object();
      for (const MetricValue& m : ms) o[m.name] = m.value;
      return o;
    };
    json points = json::array();
    for (const api::SweepPoint& p : series.points)
      points.push_back({{"requested_avg_bits", p.requested_bits},
                        {"avg_bits", p.avg_bits},
                        {"budget_bytes", p.budget_bytes},
                        {"bytes", p.bytes},
                        {"actual_avg_bits", 8.0 * p.bytes / params},
                        {"predicted_error", p.predicted_error},
                        {"metrics", metrics(p.metrics)},
                        {"images", p.images},
                        {"clamped", p.clamped},
                        {"cached", p.cached}});
    const json doc = {{"model", model},
                      {"eval_images", eval},
                      {"images", series.images},
                      {"left_out", series.left_out},
                      {"compressible_params", params},
                      {"min_bytes", series.min_bytes},
                      {"max_useful_bytes", series.max_useful_bytes},
                      {"float", metrics(series.float_metrics)},
                      {"points", points}};
    std::printf("%s\n", doc.dump(2).c_str());
    return 0;
  }
  std::string float_text;
  for (const MetricValue& m : series.float_metrics) float_text += "  " + m.name + " " + metric_text(m);
  std::printf("float:%s  (%lld images, %lld calibration images left out)\n", float_text.c_str(),
              (long long)series.images, (long long)series.left_out);
  std::printf("reachable: %.3f .. %.3f average bits (%lld .. %lld bytes)\n", 8.0 * series.min_bytes / params,
              8.0 * series.max_useful_bytes / params, (long long)series.min_bytes, (long long)series.max_useful_bytes);
  std::printf("%9s %9s %12s %12s %12s", "asked", "avg bits", "budget B", "actual B", "pred. error");
  for (const MetricValue& m : series.float_metrics) std::printf(" %9s %9s", m.name.c_str(), ("d " + m.name).c_str());
  std::printf("\n");
  for (const api::SweepPoint& p : series.points) {
    char asked[32] = "-";
    if (p.requested_bits > 0) std::snprintf(asked, sizeof asked, "%.3f", p.requested_bits);
    std::printf("%9s %9.3f %12lld %12lld %12.4g", asked, p.avg_bits, (long long)p.budget_bytes, (long long)p.bytes,
                p.predicted_error);
    for (size_t i = 0; i < p.metrics.size(); ++i) {
      const double d = i < series.float_metrics.size() ? p.metrics[i].value - series.float_metrics[i].value : 0;
      std::printf(" %9s %+9.2f", metric_text(p.metrics[i]).c_str(), d);
    }
    std::printf("%s%s\n", p.clamped ? "  (clamped)" : "", p.cached ? "  (cached)" : "");
  }
  return 0;
}

}  // namespace lorq::cli
