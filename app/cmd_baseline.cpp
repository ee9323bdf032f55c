#include "cmd_baseline.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "lorq/session/analysis_progress.h"
#include "progress_bar.h"

namespace lorq::cli {

namespace {

struct Row {
  std::string method;
  int64_t bytes = 0;
  double predicted_error = 0;
  api::EvalSummary eval;
};

// The task's first metric ("78.85%"), or "" without labels.
std::string first_metric(const api::EvalSummary& e) {
  if (e.metrics.empty()) return "";
  char f[64];
  std::snprintf(f, sizeof f, "%.2f%s", e.metrics[0].value, e.metrics[0].percent ? "%" : "");
  return f;
}

}  // namespace

void print_baseline(api::CompressionSession& session, const Allocation& allocation, const BaselineRequest& r,
                    const JobControl& job) {
  const bool gptq_first = r.analysis.quantizer == "gptq";
  api::AnalysisSettings other_settings = r.analysis;
  other_settings.quantizer = gptq_first ? "nearest" : "gptq";
  std::printf("\nbaseline: analysing with --quantizer %s too\n", other_settings.quantizer.c_str());
  auto other = api::CompressionSession::open(r.model, r.calib, r.calib_labels, other_settings, r.cache);
  StagedProgressBar progress(api::analysis_stage_costs(other_settings));
  other->analyze(progress.job());
  progress.finish();
  const Constraints constraints =
      r.constraints_json.empty() ? Constraints{} : other->parse_constraints(r.constraints_json, r.constraints_source);
  const Allocation other_allocation = other->make_allocator(constraints)->solve_checked(r.budget);
  other->finalize(other_allocation, r.final, job);

  api::CompressionSession& nearest = gptq_first ? *other : session;
  api::CompressionSession& gptq = gptq_first ? session : *other;
  const Allocation& nearest_alloc = gptq_first ? other_allocation : allocation;
  const Allocation& gptq_alloc = gptq_first ? allocation : other_allocation;
  const int64_t params = session.compressible_params();
  const int bits = static_cast<int>(std::lround(8.0 * r.budget / params));
  const std::string q = "uniform Q" + std::to_string(bits);

  std::vector<Row> rows(4);
  const Allocation un = nearest.uniform_allocation(bits), ug = gptq.uniform_allocation(bits);
  rows[0] = {q + ", nearest", un.bytes, un.predicted_error, {}};
  rows[1] = {"MLoRQ, nearest", nearest_alloc.bytes, nearest_alloc.predicted_error, {}};
  rows[2] = {q + ", gptq", ug.bytes, ug.predicted_error, {}};
  rows[3] = {"MLoRQ, gptq", gptq_alloc.bytes, gptq_alloc.predicted_error, {}};
  // Every row scores the images neither session saw: gptq's moment images (--gptq-images) are seen by its session
  // only. The run's own evaluations are reused only where its held-out images stay the same.
  const std::vector<std::string> seen_here = session.seen_images(), seen_other = other->seen_images();
  const bool same_images = std::all_of(seen_other.begin(), seen_other.end(), [&](const std::string& f) {
    return std::find(seen_here.begin(), seen_here.end(), f) != seen_here.end();
  });
  session.leave_out(seen_other);
  other->leave_out(seen_here);
  api::EvalSummary float_eval;
  if (!r.eval.empty()) {
    ProgressBar bar;
    JobControl eval_job = job;
    eval_job.progress = [&bar](const Progress& p) { bar.update(p); };
    float_eval =
        r.float_eval && same_images ? *r.float_eval : session.evaluate_float(r.eval, r.eval_labels, r.limit, eval_job);
    // The other session's rows compare with the float outputs too (the fidelity columns): it needs its own pass.
    other->evaluate_float(r.eval, r.eval_labels, r.limit, eval_job);
    auto mixed = [&](api::CompressionSession& s, const Allocation& a) {
      return &s == &session && r.compressed_eval && same_images
                 ? *r.compressed_eval
                 : s.evaluate_compressed(a, r.eval, r.eval_labels, r.limit, eval_job);
    };
    rows[0].eval = nearest.evaluate_uniform(bits, r.eval, r.eval_labels, r.limit, eval_job);
    rows[1].eval = mixed(nearest, nearest_alloc);
    rows[2].eval = gptq.evaluate_uniform(bits, r.eval, r.eval_labels, r.limit, eval_job);
    rows[3].eval = mixed(gptq, gptq_alloc);
    bar.finish();
  }
  // The predicted errors are each analysis' own sums of global errors; the metric is what compares them.
  std::printf("\n%-22s %12s %9s %12s", "method", "weight bytes", "avg bits", "pred. error");
  const bool metric = !float_eval.metrics.empty();
  if (metric)
    std::printf("  %-18s %-18s", ("float " + float_eval.metrics[0].name).c_str(),
                ("compressed " + float_eval.metrics[0].name).c_str());
  // A classifier's fidelity to the float model on the same images: what the predicted error predicts, measured.
  const bool fidelity = std::all_of(rows.begin(), rows.end(), [](const Row& w) { return w.eval.has_fidelity; });
  if (fidelity) std::printf(" %12s %12s", "same top-1", "output NSR");
  std::printf("\n");
  for (const Row& row : rows) {
    std::printf("%-22s %12lld %9.3f %12.4g", row.method.c_str(), static_cast<long long>(row.bytes),
                8.0 * row.bytes / params, row.predicted_error);
    if (metric) std::printf("  %-18s %-18s", first_metric(float_eval).c_str(), first_metric(row.eval).c_str());
    if (fidelity) std::printf(" %11.2f%% %12.4g", row.eval.agreement_pct, row.eval.output_nsr);
    std::printf("\n");
  }
  if (!r.eval.empty())
    std::printf("(%lld held-out images; the %lld images either analysis saw left out)\n",
                static_cast<long long>(float_eval.labeled), static_cast<long long>(float_eval.left_out));
  if (fidelity)
    std::printf(
        "(same top-1: images whose top-1 class is the float model's; output NSR: the whole model's "
        "measured\n global error, the quantity the predicted error sums per layer, on the same images)\n");
}

}  // namespace lorq::cli
