#include "lorq/io/packed_export.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/io/bit_pack.h"

namespace lorq {

namespace {

bool parse_version(const std::string& s, int* out) {
  if (s.empty() || s.size() > 6 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return false;
  *out = std::stoi(s);
  return true;
}

std::string unsupported(const std::string& version) {
  return "lorq export format version " + version + " is not supported (this build reads versions " +
         std::to_string(kOldestExportFormatVersion) + " to " + std::to_string(kExportFormatVersion) + ")";
}

// Largest dimension accepted in a recorded shape: keeps rows·cols and the packed sizes far from overflow.
constexpr int64_t kMaxDim = int64_t(1) << 31;

}  // namespace

int export_format_version(const std::map<std::string, std::string>& meta, const std::string& source) {
  auto format = meta.find("format");
  if (format == meta.end() || format->second != "lorq-compressed") return 0;
  auto v = meta.find("lorq_format_version");
  if (v == meta.end()) throw Error(source, "lorq export without a format version");
  int version = 0;
  if (!parse_version(v->second, &version) || version < kOldestExportFormatVersion || version > kExportFormatVersion)
    throw Error(source, unsupported(v->second));
  return version;
}

int check_lorq_config_version(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot read");
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error(path, std::string("not valid JSON (") + e.what() + ")");
  }
  if (!cfg.is_object() || !cfg.contains("version")) throw Error(path, "no format version");
  const nlohmann::json& v = cfg["version"];
  if (!v.is_number_integer() || v.get<int64_t>() < kOldestExportFormatVersion ||
      v.get<int64_t>() > kExportFormatVersion)
    throw Error(path, unsupported(v.dump()));
  return v.get<int>();
}

std::vector<std::string> quant_group_prefixes(const SafetensorsFile& file) {
  const std::string tail = ".codes";
  std::vector<std::string> out;
  for (const TensorInfo& t : file.tensors())
    if (t.name.size() > tail.size() && t.name.compare(t.name.size() - tail.size(), tail.size(), tail) == 0)
      out.push_back(t.name.substr(0, t.name.size() - tail.size()));
  std::sort(out.begin(), out.end());
  return out;
}

QuantGroup read_quant_group(const SafetensorsFile& file, const std::string& prefix, int version) {
  const std::string where = "'" + prefix + "': ";
  auto fail = [&](const std::string& problem) { return Error(file.path(), where + problem); };
  const auto& meta = file.metadata();
  auto need_meta = [&](const std::string& key) -> const std::string& {
    auto it = meta.find(prefix + "." + key);
    if (it == meta.end()) throw fail("no '" + key + "' recorded");
    return it->second;
  };
  auto need_tensor = [&](const std::string& key) -> const TensorInfo& {
    const TensorInfo* t = file.find(prefix + "." + key);
    if (!t) throw fail("lacks its '" + key + "' tensor");
    return *t;
  };

  QuantGroup g;
  g.prefix = prefix;
  const std::string& bits = need_meta("bits");
  if (bits.size() != 1 || bits[0] < '1' || bits[0] > '8') throw fail("bit width '" + bits + "' is outside 1..8");
  g.bits = bits[0] - '0';

  const TensorInfo& codes = need_tensor("codes");
  if (codes.dtype != DType::U8 || codes.shape.size() != 2) throw fail("codes must be a 2-D U8 tensor");
  bool transposed = false;
  if (version == 1) {
    g.rows = codes.shape[0];
    g.cols = codes.shape[1];
    const uint8_t* src = file.data(codes);
    g.codes.assign(src, src + codes.nbytes());
    const unsigned limit = 1u << g.bits;
    for (uint8_t c : g.codes)
      if (c >= limit) throw fail("code " + std::to_string(c) + " does not fit in " + bits + " bits");
  } else {
    std::vector<int64_t> shape;
    try {
      shape = nlohmann::json::parse(need_meta("shape")).get<std::vector<int64_t>>();
    } catch (const nlohmann::json::exception&) {
      throw fail("shape '" + need_meta("shape") + "' is not a list of integers");
    }
    if (shape.size() != 2 || shape[0] < 0 || shape[1] < 0 || shape[0] > kMaxDim || shape[1] > kMaxDim)
      throw fail("shape '" + need_meta("shape") + "' is not a [rows, cols] matrix shape");
    g.rows = shape[0];
    g.cols = shape[1];
    const std::string& layout = need_meta("layout");
    if (layout != "rows" && layout != "columns") throw fail("unknown layout '" + layout + "'");
    transposed = layout == "columns";
    const int64_t stored_rows = transposed ? g.cols : g.rows, stored_cols = transposed ? g.rows : g.cols;
    const int64_t row_bytes = static_cast<int64_t>(packed_row_bytes(stored_cols, g.bits));
    if (codes.shape[0] != stored_rows || codes.shape[1] != row_bytes)
      throw fail("packed codes are [" + std::to_string(codes.shape[0]) + ", " + std::to_string(codes.shape[1]) +
                 "] but " + std::to_string(stored_rows) + " rows of " + std::to_string(stored_cols) + " codes at " +
                 bits + " bits need [" + std::to_string(stored_rows) + ", " + std::to_string(row_bytes) + "]");
    std::vector<uint8_t> stored(static_cast<size_t>(stored_rows * stored_cols));
    try {
      unpack_codes(file.data(codes), codes.nbytes(), stored_rows, stored_cols, g.bits, stored.data());
    } catch (const Error& e) {
      throw fail(e.what());
    }
    if (!transposed) {
      g.codes = std::move(stored);
    } else {
      g.codes.resize(stored.size());
      for (int64_t i = 0; i < g.rows; ++i)
        for (int64_t j = 0; j < g.cols; ++j) g.codes[i * g.cols + j] = stored[j * g.rows + i];
    }
  }

  const TensorInfo& scale = need_tensor("scale");
  const TensorInfo& zero = need_tensor("zero_point");
  if (scale.dtype != DType::F32 || scale.numel() != g.rows)
    throw fail("scale must be F32 with one value per row (" + std::to_string(g.rows) + ")");
  const bool zero_ok = version == 1 ? zero.dtype == DType::F32 : zero.dtype == DType::F32 || zero.dtype == DType::U8;
  if (!zero_ok || zero.numel() != g.rows)
    throw fail("zero_point must be " + std::string(version == 1 ? "F32" : "U8 or F32") + " with one value per row (" +
               std::to_string(g.rows) + ")");
  g.scale = file.to_f32(scale);
  g.zero_point = file.to_f32(zero);
  for (int64_t r = 0; r < g.rows; ++r) {
    if (!(std::isfinite(g.scale[r]) && g.scale[r] > 0))
      throw fail("scale of row " + std::to_string(r) + " is not positive");
    if (!std::isfinite(g.zero_point[r]) || std::nearbyint(g.zero_point[r]) != g.zero_point[r])
      throw fail("zero-point of row " + std::to_string(r) + " is not an integer");
  }
  return g;
}

}  // namespace lorq
