#include "lorq/session/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "metrics_json.h"

namespace lorq::api {

namespace {

using nlohmann::json;

double parse_number(const std::string& word, const std::string& text) {
  try {
    size_t used = 0;
    const double v = std::stod(word, &used);
    if (used == word.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw Error("average bits '" + text + "': '" + word + "' is not a number");
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, sep)) out.push_back(part);
  if (!s.empty() && s.back() == sep) out.emplace_back();
  return out;
}

constexpr size_t kMaxBudgets = 1000;

}  // namespace

std::vector<double> parse_avg_bits_list(const std::string& text) {
  std::vector<double> out;
  if (text.find(':') != std::string::npos) {
    const std::vector<std::string> parts = split(text, ':');
    if (parts.size() != 3) throw Error("average bits '" + text + "': expected START:STOP:STEP, e.g. 2:8:0.5");
    const double start = parse_number(parts[0], text), stop = parse_number(parts[1], text),
                 step = parse_number(parts[2], text);
    if (!(step > 0)) throw Error("average bits '" + text + "': the step must be positive");
    if (start > stop) throw Error("average bits '" + text + "': START is above STOP");
    if ((stop - start) / step + 1 > kMaxBudgets)
      throw Error("average bits '" + text + "': more than " + std::to_string(kMaxBudgets) + " budgets");
    // Counted, not accumulated, so 2:8:0.1 ends at 8 and not at 7.9999.
    const int64_t n = static_cast<int64_t>(std::floor((stop - start) / step + 1e-9));
    for (int64_t i = 0; i <= n; ++i) out.push_back(start + static_cast<double>(i) * step);
  } else {
    for (const std::string& w : split(text, ',')) out.push_back(parse_number(w, text));
  }
  if (out.empty()) throw Error("average bits '" + text + "': no budget given");
  if (out.size() > kMaxBudgets)
    throw Error("average bits '" + text + "': more than " + std::to_string(kMaxBudgets) + " budgets");
  for (double b : out)
    if (!(b > 0 && b <= 32)) throw Error("average bits '" + text + "': every value must be in (0, 32]");
  return out;
}

std::vector<double> default_sweep_bits(double min_bits, double max_bits, double step) {
  std::vector<double> out{min_bits};
  if (!(max_bits > min_bits) || !(step > 0)) return out;
  for (double b = (std::floor(min_bits / step + 1e-9) + 1) * step; b < max_bits - 1e-9; b += step) out.push_back(b);
  out.push_back(max_bits);
  return out;
}

const SweepPoint* SweepSeries::find(int64_t budget_bytes) const {
  for (const SweepPoint& p : points)
    if (p.budget_bytes == budget_bytes) return &p;
  return nullptr;
}

void SweepSeries::add(const SweepPoint& point) {
  auto it = std::lower_bound(points.begin(), points.end(), point.budget_bytes,
                             [](const SweepPoint& p, int64_t b) { return p.budget_bytes < b; });
  if (it != points.end() && it->budget_bytes == point.budget_bytes)
    *it = point;
  else
    points.insert(it, point);
}

std::string sweep_key(const CompressionSession& session, const Constraints& constraints, const std::string& eval_images,
                      const std::string& eval_labels, int64_t limit) {
  const AnalysisSettings& s = session.settings();
  json k = {{"model", session.model().path},
            {"calibration", session.calibration_files()},
            {"settings",
             {s.calibration_images, s.lfh_images, s.projections, s.anchors, s.estimate, s.seed, s.lfh_as_coded,
              s.weighted_svd, s.hessian_weighted, s.swapped_lr_size, s.quantizer}},
            {"constraints", constraints.empty() ? std::string() : session.constraints_json(constraints)},
            {"eval", {eval_images, eval_labels, limit}},
            {"left_out", session.seen_images()}};
  // An analysis still being measured (progressive) allocates differently from the measured one, which keeps the
  // key it always had.
  const GlobalErrorState errors = session.global_errors();
  if (!s.estimate && !errors.measured()) k["global_errors"] = {errors.measured_layers, errors.layers};
  const std::string text = k.dump();
  return fnv1a64_hex(text.data(), text.size());
}

const SweepSeries* SweepCache::find(const std::string& key) const {
  for (const SweepSeries& s : series_)
    if (s.key == key) return &s;
  return nullptr;
}

void SweepCache::merge(const SweepSeries& series) {
  for (SweepSeries& s : series_)
    if (s.key == series.key) {
      if (!series.float_metrics.empty()) {
        s.float_metrics = series.float_metrics;
        s.images = series.images;
        s.left_out = series.left_out;
      }
      if (series.max_useful_bytes > 0) {
        s.min_bytes = series.min_bytes;
        s.max_useful_bytes = series.max_useful_bytes;
      }
      for (SweepPoint p : series.points) {
        p.cached = false;
        s.add(p);
      }
      return;
    }
  series_.push_back(series);
  for (SweepPoint& p : series_.back().points) p.cached = false;
}

std::string SweepCache::to_json() const {
  if (series_.empty()) return "";
  json all = json::array();
  for (const SweepSeries& s : series_) {
    json points = json::array();
    for (const SweepPoint& p : s.points)
      points.push_back({{"requested_bits", p.requested_bits},
                        {"budget_bytes", p.budget_bytes},
                        {"avg_bits", p.avg_bits},
                        {"clamped", p.clamped},
                        {"bytes", p.bytes},
                        {"predicted_error", p.predicted_error},
                        {"metrics", metrics_json(p.metrics)},
                        {"images", p.images},
                        {"rounded", p.rounded},
                        {"seconds", p.seconds}});
    all.push_back({{"key", s.key},
                   {"eval_images", s.eval_images},
                   {"limit", s.limit},
                   {"float_metrics", metrics_json(s.float_metrics)},
                   {"images", s.images},
                   {"left_out", s.left_out},
                   {"min_bytes", s.min_bytes},
                   {"max_useful_bytes", s.max_useful_bytes},
                   {"points", points}});
  }
  return json{{"version", 1}, {"series", all}}.dump(1);
}

SweepCache SweepCache::from_json(const std::string& text, const std::string& source) {
  SweepCache c;
  if (text.empty()) return c;
  try {
    const json doc = json::parse(text);
    if (doc.value("version", 0) != 1) throw Error(source, "sweep results: unknown version");
    for (const json& s : doc.at("series")) {
      SweepSeries series;
      series.key = s.at("key").get<std::string>();
      series.eval_images = s.value("eval_images", "");
      series.limit = s.value("limit", int64_t(0));
      series.float_metrics = metrics_from(s.at("float_metrics"));
      series.images = s.value("images", int64_t(0));
      series.left_out = s.value("left_out", int64_t(0));
      series.min_bytes = s.value("min_bytes", int64_t(0));
      series.max_useful_bytes = s.value("max_useful_bytes", int64_t(0));
      for (const json& p : s.at("points")) {
        SweepPoint q;
        q.requested_bits = p.value("requested_bits", 0.0);
        q.budget_bytes = p.at("budget_bytes").get<int64_t>();
        q.avg_bits = p.value("avg_bits", 0.0);
        q.clamped = p.value("clamped", false);
        q.bytes = p.at("bytes").get<int64_t>();
        q.predicted_error = p.at("predicted_error").get<double>();
        q.metrics = metrics_from(p.at("metrics"));
        q.images = p.value("images", int64_t(0));
        q.rounded = p.value("rounded", false);
        q.seconds = p.value("seconds", 0.0);
        series.add(q);
      }
      c.series_.push_back(std::move(series));
    }
  } catch (const json::exception& e) {
    throw Error(source, std::string("malformed sweep results: ") + e.what());
  }
  return c;
}

SweepSeries run_sweep(CompressionSession& session, const Constraints& constraints, const SweepRequest& request,
                      const SweepSeries* known, const JobControl& job,
                      const std::function<void(const SweepSeries&)>& on_point) {
  if (!session.analyzed()) throw Error("run the analysis before sweeping budgets");
  if (request.avg_bits.empty() && request.budget_bytes.empty()) throw Error("sweep: no budget given");
  const ImageSetInfo eval = list_image_set(request.eval_images, request.eval_labels);
  if (eval.labeled == 0)
    throw Error(request.eval_images,
                "has no labels: a sweep measures the task's metric (give a labels CSV or class sub-folders)");

  SweepSeries out;
  out.key = sweep_key(session, constraints, request.eval_images, request.eval_labels, request.limit);
  out.eval_images = request.eval_images;
  out.limit = request.limit;
  if (known && known->key == out.key) {
    out.float_metrics = known->float_metrics;
    out.images = known->images;
    out.left_out = known->left_out;
  }
  const auto allocator = session.make_allocator(constraints);
  const std::vector<TradeoffPoint>& curve = allocator->tradeoff_curve();
  out.min_bytes = allocator->min_bytes();
  // The largest useful budget: where the optimal error stops falling (every larger budget gives the same).
  out.max_useful_bytes = curve.empty() ? allocator->max_bytes() : curve.back().bytes;
  const int64_t params = session.compressible_params();

  // The budgets, clamped into the useful range, in ascending order, one point per distinct budget.
  std::vector<SweepPoint> wanted;
  auto want = [&](double bits, int64_t bytes) {
    SweepPoint p;
    p.requested_bits = bits;
    p.budget_bytes = std::clamp(bytes, out.min_bytes, out.max_useful_bytes);
    p.clamped = p.budget_bytes != bytes;
    p.avg_bits = 8.0 * static_cast<double>(p.budget_bytes) / static_cast<double>(params);
    for (const SweepPoint& w : wanted)
      if (w.budget_bytes == p.budget_bytes) return;
    wanted.push_back(p);
  };
  for (double b : request.avg_bits) want(b, session.budget_for_avg_bits(b));
  for (int64_t b : request.budget_bytes) want(0, b);
  std::sort(wanted.begin(), wanted.end(),
            [](const SweepPoint& a, const SweepPoint& b) { return a.budget_bytes < b.budget_bytes; });

  // What needs evaluating: budgets not cached, one evaluation per distinct allocation.
  std::vector<Allocation> allocations;
  std::vector<int> to_measure;  // indices into wanted
  for (size_t i = 0; i < wanted.size(); ++i) {
    allocations.push_back(allocator->solve(wanted[i].budget_bytes));
    const SweepPoint* cached = known && known->key == out.key ? known->find(wanted[i].budget_bytes) : nullptr;
    if (cached && !cached->metrics.empty()) {
      SweepPoint p = *cached;
      p.requested_bits = wanted[i].requested_bits;
      p.clamped = wanted[i].clamped;
      p.cached = true;
      out.add(p);
    } else {
      to_measure.push_back(static_cast<int>(i));
    }
  }
  const bool need_float = out.float_metrics.empty();
  const int64_t evaluations = static_cast<int64_t>(to_measure.size()) + (need_float ? 1 : 0);
  if (evaluations == 0) {
    if (on_point) on_point(out);  // every point was known: the caller still hears of the whole series
    return out;
  }

  // One progress figure over every evaluation: images done of (evaluations x images per evaluation).
  const auto start = std::chrono::steady_clock::now();
  int64_t finished_images = 0, per_eval = 0, eval_index = 0;
  std::string detail;
  JobControl inner = job;
  inner.progress = [&](const Progress& p) {
    if (p.total > 0) per_eval = p.total;
    Progress q;
    q.stage = "sweep";
    q.done = finished_images + p.done;
    q.total = std::max<int64_t>(1, per_eval) * evaluations;
    q.elapsed_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    q.detail = detail;
    job.report(q);
  };
  auto next_eval = [&](const std::string& what) {
    detail = what;
    ++eval_index;
  };

  if (need_float) {
    next_eval("float model");
    const EvalSummary f = session.evaluate_float(request.eval_images, request.eval_labels, request.limit, inner);
    out.float_metrics = f.metrics;
    out.images = f.images;
    out.left_out = f.left_out;
    finished_images += per_eval;
    if (on_point) on_point(out);
  }
  std::vector<std::pair<std::vector<int>, SweepPoint>> measured;  // allocation choice -> its point
  for (size_t k = 0; k < to_measure.size(); ++k) {
    const int i = to_measure[k];
    SweepPoint p = wanted[static_cast<size_t>(i)];
    const Allocation& a = allocations[static_cast<size_t>(i)];
    p.bytes = a.bytes;
    p.predicted_error = a.predicted_error;
    char what[96];
    std::snprintf(what, sizeof what, "point %zu/%zu %.2f bits", k + 1, to_measure.size(), p.avg_bits);
    next_eval(what);
    const auto same =
        std::find_if(measured.begin(), measured.end(), [&](const auto& m) { return m.first == a.choice; });
    if (same != measured.end()) {
      // Another budget with the same allocation: the same model, the same figures.
      p.metrics = same->second.metrics;
      p.images = same->second.images;
      p.rounded = same->second.rounded;
    } else {
      const auto t = std::chrono::steady_clock::now();
      p.rounded = session.rounded(a);
      const EvalSummary e =
          session.evaluate_compressed(a, request.eval_images, request.eval_labels, request.limit, inner);
      p.metrics = e.metrics;
      p.images = e.images;
      p.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
      measured.emplace_back(a.choice, p);
      finished_images += per_eval;
    }
    out.add(p);
    if (on_point) on_point(out);
  }
  return out;
}

}  // namespace lorq::api
