// The method comparison (lorq/session/method_comparison.h). LRA-QViT's ranks are fixed (r = k/2 on qkv, fc1, fc2),
// so it meets a budget only through its weight bits: the largest of 8, 6, 4, 3, 2 whose size fits, or its row says
// it cannot reach the budget.
#include "lorq/session/method_comparison.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "lorq/common/error.h"
#include "lorq/io/images.h"
#include "lorq/lraqvit/method.h"
#include "lorq/models/model.h"
#include "lorq/session/lraqvit_blocks_row.h"
#include "lorq/tasks/evaluate.h"
#include "metrics_json.h"

namespace lorq::api {

namespace {

using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string canonical(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path c = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : c.string();
}

double bits_of(int64_t bytes, int64_t params) { return params > 0 ? 8.0 * double(bytes) / double(params) : 0; }

// An allocation's layers as the Allocation view draws them.
std::vector<MethodLayerChoice> layers_of(const CompressionSession& session, const Allocation& allocation) {
  std::vector<MethodLayerChoice> out;
  const auto& layers = session.layers();
  for (size_t i = 0; i < layers.size() && i < allocation.choice.size(); ++i) {
    MethodLayerChoice c;
    c.layer = layers[i].name;
    const int k = allocation.choice[i];
    if (k == kKeepFloat) {
      c.kept_float = true;
      c.option.label = "F32";
      c.option.bytes = 4 * layers[i].params;
    } else {
      c.option = layers[i].options[static_cast<size_t>(k)];
    }
    out.push_back(c);
  }
  return out;
}

std::vector<MethodLayerChoice> layers_of(const std::vector<CompressedLayer>& compressed) {
  std::vector<MethodLayerChoice> out;
  for (const CompressedLayer& l : compressed) {
    MethodLayerChoice c;
    c.layer = l.layer;
    if (l.form == LayerForm::Float) {
      c.kept_float = true;
      c.option.label = "F32";
    } else {
      c.option.label = l.option.label();
      c.option.kind = l.option.kind;
      c.option.bits = l.option.bits;
      c.option.bits_a = l.option.bits_a;
      c.option.bits_b = l.option.bits_b;
      c.option.rank = l.option.rank;
      c.option.bytes = l.option.bytes;
    }
    out.push_back(c);
  }
  return out;
}

// What the blocks row switched on (lorq/session/lraqvit_blocks_row.h): per-token activations and WADS only exist
// with activation quantization, recovery of the float biases and norms always.
std::string blocks_note(const FinalSettings& f) {
  std::string n = f.per_token_activations ? "per-token A" + std::to_string(f.activation_bits) + ", " : "";
  if (f.wads) n += "WADS, ";
  return n + "recovery " + std::to_string(f.recovery_steps) + " steps; nearest rounding";
}

std::string metric_text(const std::vector<MetricValue>& ms, size_t i) {
  if (i >= ms.size()) return "-";
  char b[32];
  std::snprintf(b, sizeof b, "%.2f%s", ms[i].value, ms[i].percent ? "%" : "");
  return b;
}

const char* const kKindNames[] = {"uniform", "mlorq", "mlorq-rounded", "lraqvit", "mlorq-blocks"};

}  // namespace

std::vector<MethodKind> all_methods() {
  return {MethodKind::Uniform, MethodKind::MlorqNearest, MethodKind::MlorqRounded, MethodKind::LraQvit,
          MethodKind::MlorqLraQvitBlocks};
}

std::string method_kind_name(MethodKind kind) { return kKindNames[static_cast<int>(kind)]; }

MethodKind parse_method_kind(const std::string& name) {
  for (MethodKind k : all_methods())
    if (method_kind_name(k) == name) return k;
  std::string known;
  for (MethodKind k : all_methods()) known += (known.empty() ? "" : ", ") + method_kind_name(k);
  throw Error("unknown method '" + name + "' (known: " + known + ")");
}

double MethodComparison::budget_avg_bits() const { return bits_of(budget_bytes, compressible_params); }

MethodComparison run_method_comparison(const MethodComparisonSettings& s, const JobControl& job,
                                       const std::function<void(const MethodComparison&)>& on_row) {
  if (s.act_bits != 0 && s.act_bits != 4 && s.act_bits != 6 && s.act_bits != 8)
    throw Error("activation bits must be 0 (weights only), 4, 6 or 8, not " + std::to_string(s.act_bits));
  if (s.budget_bytes <= 0 && !(s.avg_bits > 0)) throw Error("the comparison needs a budget (bytes or average bits)");
  const std::vector<MethodKind> methods = s.methods.empty() ? all_methods() : s.methods;

  auto session = CompressionSession::open(s.model_path, s.calib_images, s.calib_labels, s.analysis, s.cache_dir);
  auto t = std::chrono::steady_clock::now();
  session->analyze(job);
  const double analysis_s = seconds_since(t);
  const Constraints constraints =
      s.mlorq_constraints_json.empty()
          ? Constraints{}
          : session->parse_constraints(s.mlorq_constraints_json, s.mlorq_constraints_source);

  MethodComparison out;
  out.model_path = s.model_path;
  out.eval_images = s.eval_images;
  out.compressible_params = session->compressible_params();
  out.budget_bytes = s.budget_bytes > 0 ? s.budget_bytes : session->budget_for_avg_bits(s.avg_bits);
  out.act_bits = s.act_bits;
  out.calibration_images = s.analysis.calibration_images;
  const int64_t budget = out.budget_bytes, params = out.compressible_params;
  const EvalSummary fr = session->evaluate_float(s.eval_images, s.eval_labels, s.limit, job);
  out.float_metrics = fr.metrics;
  out.float_images = fr.images;
  if (on_row) on_row(out);

  FinalSettings nearest;
  nearest.activation_bits = s.act_bits;
  FinalSettings rounded = nearest;
  rounded.round = true;
  rounded.round_iterations = s.round_iterations;
  std::vector<std::string> seen;  // images the MLoRQ rows calibrated or rounded on (left out of LRA-QViT's set)
  // An allocation of the session finalized and evaluated: the uniform and every MLoRQ row.
  const auto finalize_and_evaluate = [&](const Allocation& alloc, const FinalSettings& f, MethodRow& r) {
    const auto start = std::chrono::steady_clock::now();
    session->finalize(alloc, f, job);
    r.seconds = seconds_since(start);
    const EvalSummary e = session->evaluate_compressed(alloc, s.eval_images, s.eval_labels, s.limit, job);
    r.ran = true;
    r.bytes = alloc.bytes;
    r.metrics = e.metrics;
    r.images = e.images;
    r.layers = layers_of(*session, alloc);
  };
  int index = 0;
  for (MethodKind kind : methods) {
    job.check();
    job.report(
        {"methods", index, static_cast<int64_t>(methods.size()), 0,
         "method " + std::to_string(index + 1) + "/" + std::to_string(methods.size()) + " " + method_kind_name(kind)});
    ++index;
    MethodRow r;
    r.kind = kind;
    if (kind == MethodKind::Uniform) {
      // The largest width within the budget.
      int bits = 0;
      for (int b : {2, 3, 4, 6, 8})
        if (session->uniform_allocation(b).bytes <= budget) bits = b;
      r.method = "uniform Q" + std::to_string(bits) + " per row";
      if (bits == 0) {
        r.method = "uniform per row";
        r.note = "cannot reach the budget (Q2 is larger)";
      } else {
        finalize_and_evaluate(session->uniform_allocation(bits), nearest, r);
      }
    } else if (kind == MethodKind::MlorqNearest || kind == MethodKind::MlorqRounded ||
               kind == MethodKind::MlorqLraQvitBlocks) {
      // At the exact budget; a budget outside the allocator's range is the row's note. The blocks row is MLoRQ's
      // nearest allocation finalized with the LRA-QViT building blocks, so it shows what they add to that row.
      const bool blocks = kind == MethodKind::MlorqLraQvitBlocks;
      const FinalSettings f = blocks                             ? with_lraqvit_blocks(nearest)
                              : kind == MethodKind::MlorqRounded ? rounded
                                                                 : nearest;
      r.method = blocks ? "MLoRQ + LRA-QViT blocks" : f.round ? "MLoRQ + adaptive rounding" : "MLoRQ (nearest)";
      try {
        finalize_and_evaluate(session->make_allocator(constraints)->solve_checked(budget), f, r);
        r.seconds += analysis_s;
        for (const auto& p : session->seen_images()) seen.push_back(p);
        if (blocks) r.note = blocks_note(f);
        if (!constraints.empty()) r.note += std::string(r.note.empty() ? "" : "; ") + "under the session's constraints";
      } catch (const Cancelled&) {
        throw;
      } catch (const Error& e) {
        r.note = e.what();
      }
    } else if (kind == MethodKind::LraQvit) {
      // On the session's calibration images, evaluated without every image any method saw.
      lraqvit::LraQvitSettings ls;
      ls.act_bits = s.act_bits;
      if (s.lraqvit_steps >= 0) ls.distill.steps = std::max(1, s.lraqvit_steps);
      if (s.lraqvit_wads_steps >= 0) ls.wads_settings.steps = s.lraqvit_wads_steps;
      auto model = load_model(s.model_path);
      int bits = 0;
      for (int b : {2, 3, 4, 6, 8})
        if (lraqvit::lraqvit_weight_bytes(*model, ls.lra, b) <= budget) bits = b;
      r.method = "LRA-QViT";
      if (bits == 0) {
        r.note = "cannot reach the budget: its fixed ranks at 2 bits take " +
                 std::to_string(lraqvit::lraqvit_weight_bytes(*model, ls.lra, 2)) + " B";
      } else {
        ls.weight_bits = bits;
        r.method = "LRA-QViT W" + std::to_string(bits) + (s.act_bits ? "A" + std::to_string(s.act_bits) : "");
        ImageSet cs;
        cs.source = s.calib_images;
        for (const auto& f : session->calibration_files()) cs.items.emplace_back(f, -1);
        const ImageBatch cb = load_batch(cs, 0, cs.size(), model->preprocessing(), 2);
        t = std::chrono::steady_clock::now();
        const lraqvit::LraQvitResult res = lraqvit::run_lraqvit(*model, cb.images, {}, ls, job);
        r.seconds = seconds_since(t);
        ImageSet es = open_image_set(s.eval_images, s.eval_labels, model->label_names(), model->task());
        std::set<std::string> left_out;
        for (const auto& p : seen) left_out.insert(canonical(p));
        for (const auto& p : session->calibration_files()) left_out.insert(canonical(p));
        es.items.erase(std::remove_if(es.items.begin(), es.items.end(),
                                      [&](const ImageItem& i) { return left_out.count(canonical(i.path)) > 0; }),
                       es.items.end());
        EvalOptions o;
        o.limit = s.limit;
        c10::NoGradGuard no_grad;
        const EvalResult er = evaluate(*res.model, es, o, job);
        r.ran = true;
        r.bytes = res.weight_bytes;
        r.metrics = er.metrics;
        r.images = er.images;
        r.layers = layers_of(res.layers);
        if (res.weight_bytes < budget * 0.95)
          r.note = "uses " + std::to_string(int(std::lround(100.0 * res.weight_bytes / budget))) +
                   "% of the budget (the next width up does not fit)";
      }
    }
    if (r.ran) r.avg_bits = bits_of(r.bytes, params);
    out.rows.push_back(std::move(r));
    if (on_row) on_row(out);
  }
  job.report({"methods", index, static_cast<int64_t>(methods.size()), 0, "done"});
  out.complete = true;
  return out;
}

std::string MethodComparison::table_text() const {
  std::string text;
  char line[512];
  const int64_t params = compressible_params;
  std::snprintf(line, sizeof line,
                "budget %lld B (%.3f average bits over %lld compressible weights), activations %s, %d calibration "
                "images\n",
                (long long)budget_bytes, budget_avg_bits(), (long long)params,
                act_bits ? ("A" + std::to_string(act_bits)).c_str() : "float", calibration_images);
  text += line;
  const std::string m0 = float_metrics.empty() ? "metric" : float_metrics[0].name;
  const std::string m1 = float_metrics.size() > 1 ? float_metrics[1].name : "";
  std::snprintf(line, sizeof line, "%-28s %12s %9s %9s %9s %7s %9s  %s\n", "method", "weight B", "avg bits", m0.c_str(),
                m1.c_str(), "images", "time s", "note");
  text += line;
  std::snprintf(line, sizeof line, "%-28s %12lld %9.3f %9s %9s %7lld %9s\n", "float", (long long)(4 * params), 32.0,
                metric_text(float_metrics, 0).c_str(), metric_text(float_metrics, 1).c_str(), (long long)float_images,
                "-");
  text += line;
  for (const MethodRow& r : rows) {
    if (!r.ran) {
      std::snprintf(line, sizeof line, "%-28s %12s %9s %9s %9s %7s %9s  ", r.method.c_str(), "-", "-", "-", "-", "-",
                    "-");
    } else {
      std::snprintf(line, sizeof line, "%-28s %12lld %9.3f %9s %9s %7lld %9.1f  ", r.method.c_str(), (long long)r.bytes,
                    r.avg_bits, metric_text(r.metrics, 0).c_str(), metric_text(r.metrics, 1).c_str(),
                    (long long)r.images, r.seconds);
    }
    text += line + r.note;
    while (!text.empty() && text.back() == ' ') text.pop_back();
    text += "\n";
  }
  std::set<int64_t> counts{float_images};
  for (const MethodRow& r : rows)
    if (r.ran) counts.insert(r.images);
  if (counts.size() > 1)
    text +=
        "note: the rows were evaluated on different images (each leaves out the images it calibrated or rounded "
        "on); give an --eval folder disjoint from --calib to compare on the same images\n";
  return text;
}

std::string MethodComparison::to_json() const {
  if (empty()) return {};
  json rs = json::array();
  for (const MethodRow& r : rows) {
    json ls = json::array();
    for (const MethodLayerChoice& l : r.layers) {
      json o = {{"layer", l.layer}, {"label", l.option.label}, {"bytes", l.option.bytes}};
      if (l.kept_float) {
        o["float"] = true;
      } else if (l.option.kind == OptionKind::Quant) {
        o["bits"] = l.option.bits;
      } else {
        o["rank"] = l.option.rank;
        o["bits_a"] = l.option.bits_a;
        o["bits_b"] = l.option.bits_b;
      }
      ls.push_back(o);
    }
    rs.push_back({{"kind", method_kind_name(r.kind)},
                  {"method", r.method},
                  {"ran", r.ran},
                  {"bytes", r.bytes},
                  {"avg_bits", r.avg_bits},
                  {"metrics", metrics_json(r.metrics)},
                  {"images", r.images},
                  {"seconds", r.seconds},
                  {"note", r.note},
                  {"layers", ls}});
  }
  const json doc = {{"model", model_path},
                    {"eval_images", eval_images},
                    {"budget_bytes", budget_bytes},
                    {"compressible_params", compressible_params},
                    {"act_bits", act_bits},
                    {"calibration_images", calibration_images},
                    {"float_metrics", metrics_json(float_metrics)},
                    {"float_images", float_images},
                    {"complete", complete},
                    {"rows", rs}};
  return doc.dump(1);
}

MethodComparison MethodComparison::from_json(const std::string& text, const std::string& source) {
  MethodComparison c;
  if (text.empty()) return c;
  try {
    const json doc = json::parse(text);
    if (!doc.is_object()) throw Error(source, "the method comparison must be a JSON object");
    c.model_path = doc.value("model", "");
    c.eval_images = doc.value("eval_images", "");
    c.budget_bytes = doc.at("budget_bytes").get<int64_t>();
    c.compressible_params = doc.at("compressible_params").get<int64_t>();
    c.act_bits = doc.value("act_bits", 0);
    c.calibration_images = doc.value("calibration_images", 0);
    c.float_metrics = metrics_from(doc.value("float_metrics", json::array()));
    c.float_images = doc.value("float_images", int64_t(0));
    c.complete = doc.value("complete", false);
    for (const json& r : doc.at("rows")) {
      MethodRow row;
      try {
        row.kind = parse_method_kind(r.at("kind").get<std::string>());
      } catch (const Error& e) {
        throw Error(source, e.what());
      }
      row.method = r.at("method").get<std::string>();
      row.ran = r.value("ran", false);
      row.bytes = r.value("bytes", int64_t(0));
      row.avg_bits = r.value("avg_bits", 0.0);
      row.metrics = metrics_from(r.value("metrics", json::array()));
      row.images = r.value("images", int64_t(0));
      row.seconds = r.value("seconds", 0.0);
      row.note = r.value("note", "");
      for (const json& l : r.value("layers", json::array())) {
        MethodLayerChoice m;
        m.layer = l.at("layer").get<std::string>();
        m.option.label = l.value("label", "");
        m.option.bytes = l.value("bytes", int64_t(0));
        m.kept_float = l.value("float", false);
        if (l.contains("rank")) {
          m.option.kind = OptionKind::LowRank;
          m.option.rank = l.at("rank").get<int64_t>();
          m.option.bits_a = l.value("bits_a", 0);
          m.option.bits_b = l.value("bits_b", 0);
        } else {
          m.option.bits = l.value("bits", 0);
        }
        row.layers.push_back(m);
      }
      c.rows.push_back(std::move(row));
    }
  } catch (const json::exception& e) {
    throw Error(source, std::string("malformed method comparison: ") + e.what());
  }
  return c;
}

}  // namespace lorq::api
