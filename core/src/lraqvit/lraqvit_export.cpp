#include "lorq/lraqvit/lraqvit_export.h"

#include <ATen/ATen.h>

#include <map>

#include "lorq/common/error.h"
#include "lorq/io/export.h"
#include "lorq/io/packed_export.h"

namespace lorq::lraqvit {

namespace {

at::Tensor dequantized_group(const SafetensorsFile& file, const std::string& prefix, int version) {
  QuantGroup g = read_quant_group(file, prefix, version);
  RowQuantParams p;
  p.bits = g.bits;
  p.scale = at::from_blob(g.scale.data(), {g.rows}, at::kFloat).clone();
  p.zero_point = at::from_blob(g.zero_point.data(), {g.rows}, at::kFloat).clone();
  return dequantize_codes(at::from_blob(g.codes.data(), {g.rows, g.cols}, at::kByte).clone(), p);
}

}  // namespace

void export_lraqvit(const std::string& out_dir, const LraQvitResult& r, const std::string& source_path,
                    const std::vector<std::string>& seen_images) {
  // One option per layer: the export's analysis is only its layer list and sizes.
  CompressionAnalysis analysis;
  Allocation allocation;
  for (const CompressedLayer& c : r.layers) {
    const LinearLayerInfo& info = r.model->layer(c.layer);
    LayerCandidates l;
    l.layer = c.layer;
    l.out_features = info.out_features;
    l.in_features = info.in_features;
    l.low_rank_allowed = info.low_rank_allowed;
    analysis.layers.push_back(l);
    analysis.compressible_params += info.params();
    allocation.choice.push_back(0);
  }
  allocation.budget_bytes = allocation.bytes = r.weight_bytes;
  std::map<std::string, std::string> meta = {{"method", "lra-qvit"}};
  if (r.activations.bits > 0) {
    meta["lraqvit.act_bits"] = std::to_string(r.activations.bits);
    meta["lraqvit.act_mode"] = to_string(r.activations.mode);
  }
  export_compressed(out_dir, *r.model, source_path, analysis, allocation, r.layers, nullptr, seen_images, meta);
}

void install_exported_token_quantization(Model& model, const SafetensorsFile& file) {
  const auto& meta = file.metadata();
  auto bits_it = meta.find("lraqvit.act_bits");
  if (bits_it == meta.end()) return;
  TokenQuantizer q;
  try {
    q.bits = std::stoi(bits_it->second);
  } catch (const std::exception&) {
    throw Error(file.path(), "bad lraqvit.act_bits '" + bits_it->second + "'");
  }
  if (q.bits < 2 || q.bits > 8) throw Error(file.path(), "lraqvit.act_bits outside 2..8");
  auto mode_it = meta.find("lraqvit.act_mode");
  try {
    q.mode = token_quant_mode_from_string(mode_it == meta.end() ? "sym" : mode_it->second);
  } catch (const Error& e) {
    throw Error(file.path(), e.what());
  }
  const int version = export_format_version(meta, file.path());
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> factors;
  for (const LinearLayerInfo& info : model.linear_layers()) {
    if (!file.find(info.name + ".lowrank_a.codes")) continue;
    factors[info.name] = {dequantized_group(file, info.name + ".lowrank_a", version),
                          dequantized_group(file, info.name + ".lowrank_b", version)};
  }
  install_token_quantization(model, factors, q);
}

}  // namespace lorq::lraqvit
