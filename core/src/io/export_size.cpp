#include "lorq/io/export_size.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "lorq/common/error.h"
#include "lorq/io/packed_export.h"
#include "lorq/io/safetensors.h"

namespace lorq {

ExportSizeBreakdown export_size_breakdown(const std::string& dir) {
  namespace fs = std::filesystem;
  const std::string cfg_path = (fs::path(dir) / "lorq-config.json").string();
  const std::string weights = (fs::path(dir) / "compressed.safetensors").string();
  ExportSizeBreakdown s;
  s.format_version = check_lorq_config_version(cfg_path);
  nlohmann::json cfg;
  std::set<std::string> float_layers;
  int64_t compressed_params = 0;
  try {
    std::ifstream in(cfg_path);
    cfg = nlohmann::json::parse(in);
    s.budget_bytes = cfg.at("budget").at("bytes").get<int64_t>();
    for (const auto& l : cfg.at("layers")) {
      const std::string kind = l.at("kind").get<std::string>();
      if (kind == "float") {
        float_layers.insert(l.at("name").get<std::string>() + ".weight");
        continue;
      }
      s.budget_code_bytes += l.at("bytes").get<int64_t>();
      compressed_params += l.at("shape").at(0).get<int64_t>() * l.at("shape").at(1).get<int64_t>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(cfg_path, std::string("not a lorq export configuration (") + e.what() + ")");
  }
  const SafetensorsFile file = SafetensorsFile::open(weights);
  std::set<std::string> group_tensors;
  for (const std::string& p : quant_group_prefixes(file))
    for (const char* part : {".codes", ".scale", ".zero_point"}) group_tensors.insert(p + part);
  int64_t data_bytes = 0, float_params = 0;
  for (const TensorInfo& t : file.tensors()) {
    const int64_t n = static_cast<int64_t>(t.nbytes());
    data_bytes += n;
    const std::string& name = t.name;
    const auto tail = [&](const char* x) {
      const std::string e(x);
      return name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
    };
    if (group_tensors.count(name)) {
      (tail(".codes") ? s.code_bytes : s.param_bytes) += n;
    } else if (name.rfind("activation.", 0) == 0) {
      s.param_bytes += n;
    } else {
      (float_layers.count(name) ? s.float_layer_bytes : s.float_other_bytes) += n;
      float_params += t.numel();
    }
  }
  std::error_code ec;
  s.file_bytes = static_cast<int64_t>(fs::file_size(weights, ec));
  if (ec) throw Error(weights, "cannot read its size (" + ec.message() + ")");
  s.header_bytes = s.file_bytes - data_bytes;
  s.float_checkpoint_bytes = 4 * (float_params + compressed_params);
  return s;
}

std::string format_export_size(const ExportSizeBreakdown& s) {
  auto mb = [](int64_t b) { return b / 1e6; };
  char buf[1024];
  std::string out;
  std::snprintf(buf, sizeof buf, "export size (format version %d):\n", s.format_version);
  out += buf;
  std::snprintf(buf, sizeof buf,
                "  weight codes      %12lld B  (%.3f MB; budget accounting %lld B of a %lld B budget)\n",
                static_cast<long long>(s.code_bytes), mb(s.code_bytes), static_cast<long long>(s.budget_code_bytes),
                static_cast<long long>(s.budget_bytes));
  out += buf;
  std::snprintf(buf, sizeof buf, "  scales/zero-points%12lld B  (%.3f MB)\n", static_cast<long long>(s.param_bytes),
                mb(s.param_bytes));
  out += buf;
  std::snprintf(buf, sizeof buf, "  float32 layers    %12lld B  (%.3f MB; compressible layers kept in float)\n",
                static_cast<long long>(s.float_layer_bytes), mb(s.float_layer_bytes));
  out += buf;
  std::snprintf(buf, sizeof buf, "  other float       %12lld B  (%.3f MB; embeddings, norms, biases)\n",
                static_cast<long long>(s.float_other_bytes), mb(s.float_other_bytes));
  out += buf;
  std::snprintf(buf, sizeof buf, "  header            %12lld B\n", static_cast<long long>(s.header_bytes));
  out += buf;
  std::snprintf(buf, sizeof buf, "  file              %12lld B  (%.3f MB; float32 checkpoint %.3f MB, %.2fx smaller)\n",
                static_cast<long long>(s.file_bytes), mb(s.file_bytes), mb(s.float_checkpoint_bytes),
                s.file_bytes > 0 ? double(s.float_checkpoint_bytes) / double(s.file_bytes) : 0.0);
  out += buf;
  return out;
}

std::string export_size_report(const std::string& dir) noexcept {
  try {
    return format_export_size(export_size_breakdown(dir));
  } catch (const std::exception& e) {
    return std::string("export size: not available (") + e.what() + ")\n";
  }
}

}  // namespace lorq
