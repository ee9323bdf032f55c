#include "lorq/io/export.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/quant/quantizer.h"
#include "lorq/io/tensor_io.h"
#include "lorq/io/bit_pack.h"

namespace fs = std::filesystem;

namespace lorq {

namespace {

// Adds "<prefix>.codes|.scale|.zero_point" for a per-row quantized tensor, codes bit-packed (format version 2,
// lorq/io/packed_export.h); `transposed` stores the codes column by column (the low-rank factor A).
void add_quantized(std::vector<std::pair<std::string, at::Tensor>>& out, std::map<std::string, std::string>& meta,
                   const std::string& prefix, const QuantizedTensor& q, bool transposed) {
  const at::Tensor codes = q.codes.to(at::kByte).cpu();
  const at::Tensor stored = (transposed ? codes.t() : codes).contiguous();
  const int64_t rows = stored.size(0), cols = stored.size(1);
  at::Tensor packed = at::empty({rows, static_cast<int64_t>(packed_row_bytes(cols, q.params.bits))}, at::kByte);
  pack_codes(stored.data_ptr<uint8_t>(), rows, cols, q.params.bits, packed.data_ptr<uint8_t>());
  out.emplace_back(prefix + ".codes", packed);
  out.emplace_back(prefix + ".scale", q.params.scale.to(at::kFloat).contiguous());
  // Zero-points are integers; one byte each when they all fit (see packed_export.h).
  const at::Tensor z = q.params.zero_point.to(at::kFloat).contiguous();
  const bool fits_u8 = z.numel() == 0 || (z.min().item<float>() >= 0 && z.max().item<float>() <= 255);
  out.emplace_back(prefix + ".zero_point", fits_u8 ? z.to(at::kByte) : z);
  meta[prefix + ".bits"] = std::to_string(q.params.bits);
  meta[prefix + ".shape"] = nlohmann::json(codes.sizes().vec()).dump();
  meta[prefix + ".layout"] = transposed ? "columns" : "rows";
}

at::Tensor to_tensor(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat).clone();
}

}  // namespace

void export_compressed(const std::string& out_dir, const Model& model, const std::string& source_path,
                       const CompressionAnalysis& a, const Allocation& alloc, const std::vector<CompressedLayer>& given,
                       const ActivationQuantization* activations, const std::vector<std::string>& seen_images,
                       const std::map<std::string, std::string>& method_metadata) {
  c10::NoGradGuard no_grad;
  const std::vector<CompressedLayer> layers_c = given.empty() ? compress_layers(model, a, alloc) : given;
  if (layers_c.size() != a.layers.size()) throw Error("export: one compressed layer per analysed layer is needed");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) throw Error(out_dir, "cannot create the output folder (" + ec.message() + ")");

  const ModelFiles files = locate_model_files(source_path);
  nlohmann::json layers = nlohmann::json::array();
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> meta = {{"format", "lorq-compressed"},
                                             {"lorq_format_version", std::to_string(kExportFormatVersion)}};
  std::set<std::string> replaced;
  int64_t total_bytes = 0;
  double total_error = 0;
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LayerCandidates& l = a.layers[i];
    const CompressedLayer& c = layers_c[i];
    if (c.layer != l.layer) throw Error("export: compressed layer '" + c.layer + "' is out of order");
    nlohmann::json entry = {{"name", l.layer},
                            {"shape", {l.out_features, l.in_features}},
                            {"checkpoint_shape", model.layer(l.layer).weight_shape}};
    if (c.form == LayerForm::Float) {
      const int64_t bytes = 4 * l.out_features * l.in_features;
      entry.update({{"kind", "float"}, {"bytes", bytes}, {"predicted_error", 0.0}});
      total_bytes += bytes;
      layers.push_back(entry);
      continue;
    }
    const LayerOption& o = c.option;
    if (c.form == LayerForm::Quant) {
      add_quantized(tensors, meta, l.layer + ".weight", c.weight, false);
    } else {
      add_quantized(tensors, meta, l.layer + ".lowrank_a", c.a, true);
      add_quantized(tensors, meta, l.layer + ".lowrank_b", c.b, false);
    }
    replaced.insert(l.layer + ".weight");
    total_bytes += o.bytes;
    total_error += o.error;
    entry.update({{"kind", c.form == LayerForm::Quant ? "quant" : "low_rank"},
                  {"bits", o.bits},
                  {"rank", o.rank},
                  {"bits_a", o.bits_a},
                  {"bits_b", o.bits_b},
                  {"bytes", o.bytes},
                  {"local_loss", o.local_loss},
                  {"predicted_error", o.error},
                  {"error_measured", o.measured},
                  {"rounding", c.rounding_learned ? "learned" : "nearest"}});
    layers.push_back(entry);
    meta[l.layer + ".checkpoint_shape"] = nlohmann::json(model.layer(l.layer).weight_shape).dump();
  }
  nlohmann::json act = nullptr;
  if (activations && !activations->quantizers.empty()) {
    act = nlohmann::json::object();
    for (const auto& [point, q] : activations->quantizers) {
      if (!q.calibrated()) throw Error("export: activation quantizer '" + point + "' is not calibrated");
      const std::string prefix = "activation." + point;
      tensors.emplace_back(prefix + ".scale", q.scale.to(at::kFloat).contiguous());
      if (q.zero_point.defined())
        tensors.emplace_back(prefix + ".zero_point", q.zero_point.to(at::kFloat).contiguous());
      const char* type = q.type == ActQuantizerType::PerTensor    ? "per_tensor"
                         : q.type == ActQuantizerType::PerChannel ? "per_channel"
                                                                  : "log_sqrt2";
      meta[prefix + ".type"] = type;
      meta[prefix + ".bits"] = std::to_string(q.bits);
      act[point] = {{"type", type}, {"bits", q.bits}};
    }
  }
  for (const auto& [key, t] : model.named_tensors())
    if (!replaced.count(key)) tensors.emplace_back(key, t);

  nlohmann::json cfg = {
      {"format", "lorq-config"},
      {"version", kExportFormatVersion},
      {"source_model", {{"path", files.weights}, {"checksum_fnv1a64", file_checksum(files.weights)}}},
      {"budget", {{"bytes", alloc.budget_bytes}, {"avg_bits", 8.0 * alloc.budget_bytes / a.compressible_params}}},
      {"layers", layers},
      {"activation_quantizers", act},
      {"totals",
       {{"bytes", total_bytes},
        {"avg_bits", 8.0 * total_bytes / a.compressible_params},
        {"compressible_params", a.compressible_params},
        {"fp32_bytes", 4 * a.compressible_params},
        {"predicted_error", total_error}}},
  };
  nlohmann::json seen = nlohmann::json::array();
  for (const std::string& path : seen_images) {
    std::error_code canon_ec;
    const fs::path c = fs::weakly_canonical(path, canon_ec);
    seen.push_back(canon_ec ? path : c.string());
  }
  cfg["calibration_images"] = seen;
  if (!method_metadata.empty()) cfg["method"] = method_metadata;
  for (const auto& [k, v] : method_metadata) meta[k] = v;
  write_tensors(out_dir + "/compressed.safetensors", tensors, meta);
  // The source's own config (and a Hugging Face image processor's), so the export loads like the original.
  std::string config = model.config_json();
  if (config.empty() || config.back() != '\n') config += "\n";
  write_text_atomically(out_dir + "/config.json", config);
  if (!model.preprocessor_config_path().empty())
    write_text_atomically(out_dir + "/preprocessor_config.json", read_text_file(model.preprocessor_config_path()));
  write_text_atomically(out_dir + "/lorq-config.json", cfg.dump(1) + "\n");
}

ActivationQuantization take_activation_quantizers(std::map<std::string, at::Tensor>& t,
                                                  const std::map<std::string, std::string>& meta,
                                                  const std::string& source) {
  ActivationQuantization aq;
  const std::string head = "activation.", tail = ".scale";
  std::vector<std::string> points;
  for (const auto& [k, v] : t)
    if (k.rfind(head, 0) == 0 && k.size() > head.size() + tail.size() &&
        k.compare(k.size() - tail.size(), tail.size(), tail) == 0)
      points.push_back(k.substr(head.size(), k.size() - head.size() - tail.size()));
  for (const std::string& point : points) {
    const std::string prefix = head + point;
    auto type = meta.find(prefix + ".type");
    auto bits = meta.find(prefix + ".bits");
    if (type == meta.end() || bits == meta.end())
      throw Error(source, "activation quantizer '" + point + "' lacks its type or bits");
    ActivationQuantizer q;
    if (type->second == "per_tensor") {
      q.type = ActQuantizerType::PerTensor;
    } else if (type->second == "per_channel") {
      q.type = ActQuantizerType::PerChannel;
    } else if (type->second == "log_sqrt2") {
      q.type = ActQuantizerType::LogSqrt2;
    } else {
      throw Error(source, "activation quantizer '" + point + "' has unknown type '" + type->second + "'");
    }
    try {
      q.bits = std::stoi(bits->second);
    } catch (const std::exception&) {
      throw Error(source, "activation quantizer '" + point + "' has bad bits '" + bits->second + "'");
    }
    if (q.bits < 1 || q.bits > 8) throw Error(source, "activation quantizer '" + point + "' has bits outside 1..8");
    q.scale = t.at(prefix + ".scale").to(at::kFloat);
    t.erase(prefix + ".scale");
    auto zp = t.find(prefix + ".zero_point");
    if (zp != t.end()) {
      q.zero_point = zp->second.to(at::kFloat);
      t.erase(zp);
    }
    if (q.type != ActQuantizerType::LogSqrt2 && (!q.zero_point.defined() || q.zero_point.sizes() != q.scale.sizes()))
      throw Error(source, "activation quantizer '" + point + "': zero-point missing or of another shape than scale");
    aq.quantizers[point] = q;
  }
  return aq;
}

void decode_compressed_tensors(std::map<std::string, at::Tensor>& t, const SafetensorsFile& file) {
  const std::map<std::string, std::string>& meta = file.metadata();
  const std::string& source = file.path();
  const int version = export_format_version(meta, source);
  const std::vector<std::string> prefixes = quant_group_prefixes(file);
  if (version == 0) {
    if (!prefixes.empty()) throw Error(source, "holds quantization codes but is not marked as a lorq export");
    return;
  }
  std::map<std::string, at::Tensor> decoded;  // prefix -> dequantized matrix
  for (const std::string& prefix : prefixes) {
    QuantGroup g = read_quant_group(file, prefix, version);
    RowQuantParams p;
    p.bits = g.bits;
    p.scale = to_tensor(g.scale);
    p.zero_point = to_tensor(g.zero_point);
    const at::Tensor codes = at::from_blob(g.codes.data(), {g.rows, g.cols}, at::kByte).clone();
    decoded[prefix] = dequantize_codes(codes, p);
    for (const char* part : {".codes", ".scale", ".zero_point"}) t.erase(prefix + part);
  }
  auto shape_of = [&](const std::string& layer, at::IntArrayRef fallback) {
    auto it = meta.find(layer + ".checkpoint_shape");
    if (it == meta.end()) return fallback.vec();
    std::vector<int64_t> shape;
    try {
      shape = nlohmann::json::parse(it->second).get<std::vector<int64_t>>();
    } catch (const std::exception&) {
      throw Error(source, "bad checkpoint_shape for '" + layer + "'");
    }
    int64_t n = 1;
    for (int64_t d : shape) n = d < 0 || n > (int64_t(1) << 40) ? -1 : n * d;
    if (n != static_cast<int64_t>(fallback[0] * fallback[1]))
      throw Error(source, "checkpoint_shape of '" + layer + "' does not match its " + std::to_string(fallback[0]) +
                              "x" + std::to_string(fallback[1]) + " weight");
    return shape;
  };
  auto ends_with = [](const std::string& s, const std::string& tail) {
    return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
  };
  for (const auto& [prefix, m] : decoded) {
    if (ends_with(prefix, ".weight")) {
      const std::string layer = prefix.substr(0, prefix.size() - 7);
      t[layer + ".weight"] = m.reshape(shape_of(layer, m.sizes()));
    } else if (ends_with(prefix, ".lowrank_a")) {
      const std::string layer = prefix.substr(0, prefix.size() - 10);
      auto b = decoded.find(layer + ".lowrank_b");
      if (b == decoded.end()) throw Error(source, "'" + layer + "': low-rank factor B is missing");
      if (m.size(1) != b->second.size(0)) throw Error(source, "'" + layer + "': the factors' ranks disagree");
      const at::Tensor w = at::mm(m, b->second);
      t[layer + ".weight"] = w.reshape(shape_of(layer, w.sizes()));
    } else if (ends_with(prefix, ".lowrank_b")) {
      if (!decoded.count(prefix.substr(0, prefix.size() - 10) + ".lowrank_a"))
        throw Error(source, "'" + prefix + "': low-rank factor A is missing");
    } else {
      throw Error(source, "'" + prefix + "': codes of an unknown kind of tensor");
    }
  }
}

std::vector<std::string> export_calibration_images(const std::string& model_path) {
  const ModelFiles files = locate_model_files(model_path);
  const fs::path cfg = fs::path(files.weights).parent_path() / "lorq-config.json";
  std::error_code ec;
  if (!fs::is_regular_file(cfg, ec)) return {};
  try {
    const nlohmann::json j = nlohmann::json::parse(read_text_file(cfg.string()));
    if (!j.is_object() || j.value("format", "") != "lorq-config" || !j.contains("calibration_images")) return {};
    return j.at("calibration_images").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(cfg.string(), std::string("malformed calibration_images (") + e.what() + ")");
  }
}

}  // namespace lorq
