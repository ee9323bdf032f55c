#include "lorq/pipeline/session_cache.h"

#include <ATen/ATen.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/io/export.h"
#include "lorq/io/tensor_io.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace lorq {

namespace {

constexpr int kCacheVersion = 1;

std::string fnv_hex(const std::string& text) { return fnv1a64_hex(text.data(), text.size()); }

json settings_json(const CompressSettings& s) {
  const CandidateSettings& c = s.candidates;
  json quantizer = {quantizer_name(c.quantizer), c.gptq.damping, c.gptq.block, c.gptq.act_order};
  // Compensated analyses made before the cross-fitted global errors (pipeline/cross_fit.h) must not be reused.
  if (c.quantizer == Quantizer::Gptq) quantizer.push_back("cross-fit");
  if (c.quantizer == Quantizer::Gptq && c.gptq.row_grid_max_bits > 0)
    quantizer.push_back({"row_grids", c.gptq.row_grid_max_bits});
  // Only where it changes the moments, so that earlier gptq analyses keep their keys.
  if (c.quantizer == Quantizer::Gptq && c.gptq_images > s.calibration.images)
    quantizer.push_back({"moment_images", c.gptq_images});
  if (c.quantizer == Quantizer::Gptq && !c.gptq_damping_choices.empty())
    quantizer.push_back({"damping_choices", c.gptq_damping_choices});
  json global_error = {s.global_error.anchors, s.global_error.batch, s.global_error.estimate};
  if (s.global_error.calibrated) global_error.push_back({"calibrated", s.global_error.calibrate_above_bits});
  // A gptq analysis' estimate was the plain LFH estimate before the compensated one (pipeline/compensated_estimate.h).
  if (s.global_error.estimate && c.quantizer == Quantizer::Gptq) global_error.push_back("compensated-estimate");
  return {{"calibration", {s.calibration.images, s.calibration.seed, s.calibration.batch}},
          {"lfh", {s.lfh_images, s.lfh.projections, s.lfh.as_coded_accumulation, s.lfh.seed}},
          {"candidates", {c.bits, c.factor_bits, c.hessian_weighted, c.weighted_svd, c.swapped_lr_size}},
          {"quantizer", quantizer},
          {"global_error", global_error}};
}

void put_params(std::vector<std::pair<std::string, at::Tensor>>& out, const std::string& prefix,
                const std::map<int, RowQuantParams>& params) {
  for (const auto& [bits, p] : params) {
    out.emplace_back(prefix + std::to_string(bits) + ".scale", p.scale);
    out.emplace_back(prefix + std::to_string(bits) + ".zero_point", p.zero_point);
  }
}

std::map<int, RowQuantParams> get_params(const std::map<std::string, at::Tensor>& t, const std::string& prefix,
                                         const std::vector<int>& bits) {
  std::map<int, RowQuantParams> out;
  for (int b : bits) {
    const std::string k = prefix + std::to_string(b);
    out[b] = {t.at(k + ".scale"), t.at(k + ".zero_point"), b};
  }
  return out;
}

}  // namespace

SessionCache::SessionCache(std::string dir, const std::string& model_path, const ImageSet& images,
                           const CompressSettings& s)
    : dir_(std::move(dir)), estimate_(s.global_error.estimate) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(dir_, "cannot create the cache folder (" + ec.message() + ")");
  json files = json::array();
  // Canonical paths: the CLI (relative paths) and the workbench (absolute ones) share one cache.
  for (const auto& item : images.items) files.push_back(fs::weakly_canonical(item.path, ec).string());
  const json key = {{"version", kCacheVersion},
                    {"model", file_checksum(locate_model_files(model_path).weights)},
                    {"images", fnv_hex(files.dump())},
                    {"settings", settings_json(s)}};
  key_ = fnv_hex(key.dump());
  // The sensitivity depends on the model, the images and the calibration and LFH settings only: analyses that differ
  // in their candidates, quantizer or global errors (--baseline's second quantizer, --gptq-images) share it.
  const json settings = settings_json(s);
  const json lfh_key = {{"version", kCacheVersion},
                        {"model", key["model"]},
                        {"images", key["images"]},
                        {"calibration", settings["calibration"]},
                        {"lfh", settings["lfh"]}};
  lfh_key_ = fnv_hex(lfh_key.dump());
}

std::string SessionCache::path(const std::string& artifact) const { return dir_ + "/" + key_ + "." + artifact; }

bool SessionCache::load_lfh(std::map<std::string, at::Tensor>* lfh, std::vector<std::string>* warnings) const {
  std::string p = dir_ + "/" + lfh_key_ + ".lfh.safetensors", expected = lfh_key_;
  // Caches written before the sensitivity had its own key keep it under the analysis' key.
  if (!fs::exists(p)) {
    p = path("lfh.safetensors");
    expected = key_;
  }
  if (!fs::exists(p)) return false;
  try {
    SafetensorsFile f = SafetensorsFile::open(p);
    if (f.metadata().count("lorq_cache_key") == 0 || f.metadata().at("lorq_cache_key") != expected)
      throw Error(p, "stale cache (key mismatch)");
    *lfh = read_all_tensors(f, true);
    return true;
  } catch (const std::exception& e) {
    if (warnings) warnings->push_back(std::string("ignored the cached sensitivity: ") + e.what());
    return false;
  }
}

void SessionCache::save_lfh(const std::map<std::string, at::Tensor>& lfh) const {
  std::vector<std::pair<std::string, at::Tensor>> t(lfh.begin(), lfh.end());
  write_tensors(dir_ + "/" + lfh_key_ + ".lfh.safetensors", t, {{"lorq_cache_key", lfh_key_}});
}

void SessionCache::save_analysis(const CompressionAnalysis& a, bool with_errors) const {
  std::vector<std::pair<std::string, at::Tensor>> t;
  json layers = json::array();
  for (const LayerCandidates& l : a.layers) {
    json opts = json::array();
    for (const LayerOption& o : l.options)
      opts.push_back({int(o.kind), o.bits, o.bits_a, o.bits_b, o.rank, o.size_bits, o.bytes, o.local_loss,
                      with_errors ? o.error : -1.0, with_errors && o.measured});
    std::vector<int> wb, fb;
    for (const auto& [b, p] : l.weight_params) wb.push_back(b);
    for (const auto& [b, p] : l.a_params) fb.push_back(b);
    layers.push_back({{"name", l.layer},
                      {"m", l.out_features},
                      {"n", l.in_features},
                      {"low_rank", l.low_rank_allowed},
                      {"considered", l.candidates_considered},
                      {"weight_bits", wb},
                      {"factor_bits", fb},
                      {"guarded_rows", l.factors.guarded_rows},
                      {"errors_measured", with_errors && l.errors_measured},
                      {"options", opts}});
    put_params(t, l.layer + "/w", l.weight_params);
    for (const auto& [b, v] : l.weight_values) t.emplace_back(l.layer + "/wv" + std::to_string(b), v);
    for (const auto& [b, v] : l.b_values) t.emplace_back(l.layer + "/bv" + std::to_string(b), v);
    for (const auto& [ab, v] : l.a_values)
      t.emplace_back(l.layer + "/av" + std::to_string(ab.first) + "_" + std::to_string(ab.second), v);
    if (l.low_rank_allowed) {
      t.emplace_back(l.layer + "/A", l.factors.A);
      t.emplace_back(l.layer + "/B", l.factors.B);
      t.emplace_back(l.layer + "/S", l.factors.singular_values);
      t.emplace_back(l.layer + "/d", l.factors.row_weights);
      put_params(t, l.layer + "/a", l.a_params);
      put_params(t, l.layer + "/b", l.b_params);
    }
  }
  json stages = json::array();
  for (const auto& [name, sec] : a.stage_seconds) stages.push_back({name, sec});
  const json doc = {{"layers", layers},
                    {"params", a.compressible_params},
                    {"stages", stages},
                    {"calibration_files", a.calibration_files},
                    {"moment_files", a.moment_files},
                    {"gptq_damping", a.gptq_damping}};
  write_tensors(path(with_errors ? "analysis.safetensors" : "candidates.safetensors"), t,
                {{"lorq_cache_key", key_}, {"analysis", doc.dump()}});
}

bool SessionCache::load_analysis(bool with_errors, CompressionAnalysis* a, std::vector<std::string>* warnings) const {
  const std::string p = path(with_errors ? "analysis.safetensors" : "candidates.safetensors");
  if (!fs::exists(p)) return false;
  try {
    SafetensorsFile f = SafetensorsFile::open(p);
    const auto& meta = f.metadata();
    if (meta.count("lorq_cache_key") == 0 || meta.at("lorq_cache_key") != key_)
      throw Error(p, "stale cache (key mismatch)");
    if (meta.count("analysis") == 0) throw Error(p, "no analysis record");
    const json doc = json::parse(meta.at("analysis"));
    const auto t = read_all_tensors(f, true);
    CompressionAnalysis out;
    out.compressible_params = doc.at("params").get<int64_t>();
    out.calibration_files = doc.at("calibration_files").get<std::vector<std::string>>();
    if (doc.contains("moment_files")) out.moment_files = doc.at("moment_files").get<std::vector<std::string>>();
    out.gptq_damping = doc.value("gptq_damping", 0.0);  // 0: written before the record (or nearest rounding)
    for (const json& s : doc.at("stages")) out.stage_seconds.emplace_back(s[0].get<std::string>(), s[1].get<double>());
    for (const json& j : doc.at("layers")) {
      LayerCandidates l;
      l.layer = j.at("name").get<std::string>();
      l.out_features = j.at("m").get<int64_t>();
      l.in_features = j.at("n").get<int64_t>();
      l.low_rank_allowed = j.at("low_rank").get<bool>();
      l.candidates_considered = j.at("considered").get<int64_t>();
      // Files written before the flag: a complete analysis was measured unless its settings asked for estimates.
      l.errors_measured =
          j.value("errors_measured", with_errors && !(estimate_ && l.low_rank_allowed));
      l.weight_params = get_params(t, l.layer + "/w", j.at("weight_bits").get<std::vector<int>>());
      if (l.low_rank_allowed) {
        const auto fb = j.at("factor_bits").get<std::vector<int>>();
        l.factors.A = t.at(l.layer + "/A");
        l.factors.B = t.at(l.layer + "/B");
        l.factors.singular_values = t.at(l.layer + "/S");
        l.factors.row_weights = t.at(l.layer + "/d");
        l.factors.guarded_rows = j.at("guarded_rows").get<int64_t>();
        l.a_params = get_params(t, l.layer + "/a", fb);
        l.b_params = get_params(t, l.layer + "/b", fb);
      }
      // Compensated values (absent for nearest rounding).
      for (const auto& [b, p] : l.weight_params)
        if (t.count(l.layer + "/wv" + std::to_string(b)))
          l.weight_values[b] = t.at(l.layer + "/wv" + std::to_string(b));
      for (const auto& [bb, pb] : l.b_params) {
        if (t.count(l.layer + "/bv" + std::to_string(bb))) l.b_values[bb] = t.at(l.layer + "/bv" + std::to_string(bb));
        for (const auto& [ba, pa] : l.a_params) {
          const std::string k = l.layer + "/av" + std::to_string(ba) + "_" + std::to_string(bb);
          if (t.count(k)) l.a_values[{ba, bb}] = t.at(k);
        }
      }
      for (const json& o : j.at("options")) {
        LayerOption x;
        x.kind = static_cast<OptionKind>(o[0].get<int>());
        x.bits = o[1];
        x.bits_a = o[2];
        x.bits_b = o[3];
        x.rank = o[4];
        x.size_bits = o[5];
        x.bytes = o[6];
        x.local_loss = o[7];
        x.error = o[8];
        x.measured = o[9];
        l.options.push_back(x);
      }
      out.layers.push_back(std::move(l));
    }
    *a = std::move(out);
    return true;
  } catch (const std::exception& e) {
    if (warnings) warnings->push_back(std::string("ignored the cached analysis: ") + e.what());
    return false;
  }
}

CompressionAnalysis analyze_model_cached(Model& model, const std::string& model_path, const ImageSet& images,
                                         const CompressSettings& s, const std::string& cache_dir,
                                         const JobControl& job, const AnalysisRevisionFn& on_revision) {
  SessionCache cache(cache_dir, model_path, images, s);
  return analyze_model(model, images, s, job, &cache, on_revision);
}

}  // namespace lorq
