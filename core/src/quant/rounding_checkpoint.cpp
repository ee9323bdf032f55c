#include "rounding_checkpoint.h"

#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/safetensors.h"
#include "lorq/io/tensor_io.h"

namespace lorq {

namespace {

constexpr int kCheckpointVersion = 1;

// FNV-1a over a tensor's bytes (contiguous float copy), chained through its hex digest and the running text.
std::string tensor_hash(const at::Tensor& t) {
  if (!t.defined()) return "-";
  const at::Tensor c = t.contiguous().cpu();
  return fnv1a64_hex(c.data_ptr(), c.numel() * c.element_size());
}

std::string quantized_hash(const QuantizedTensor& q) {
  return tensor_hash(q.values) + tensor_hash(q.params.scale) + tensor_hash(q.params.zero_point) + "/" +
         std::to_string(q.params.bits) + (q.compensated ? "/compensated" : "");  // another start, other codes
}

std::vector<const QuantizedTensor*> quantized_of(const CompressedLayer& l) {
  if (l.form == LayerForm::Quant) return {&l.weight};
  if (l.form == LayerForm::LowRank) return {&l.a, &l.b};
  return {};
}
std::vector<QuantizedTensor*> quantized_of(CompressedLayer& l) {
  if (l.form == LayerForm::Quant) return {&l.weight};
  if (l.form == LayerForm::LowRank) return {&l.a, &l.b};
  return {};
}

}  // namespace

std::string rounding_checkpoint_key(const Model& model, const std::vector<CompressedLayer>& layers,
                                    const at::Tensor& images, const RoundingSettings& s) {
  nlohmann::json key;
  key["version"] = kCheckpointVersion;
  std::string model_hash;
  for (const auto& [name, t] : model.named_tensors()) model_hash += name + tensor_hash(t);
  key["model"] = fnv1a64_hex(model_hash.data(), model_hash.size());
  key["images"] = tensor_hash(images);
  nlohmann::json ls = nlohmann::json::array();
  for (const CompressedLayer& l : layers) {
    std::string h;
    for (const QuantizedTensor* q : quantized_of(l)) h += quantized_hash(*q);
    ls.push_back({l.layer, static_cast<int>(l.form), l.form == LayerForm::Float ? "" : l.option.label(), h});
  }
  key["layers"] = ls;
  // Everything that changes the learned codes (not record_every, which only thins the report).
  key["settings"] = {s.iterations,
                     s.images,
                     s.batch,
                     s.tokens_per_image,
                     s.rows_per_step,
                     s.lr,
                     s.reg_factor,
                     s.warmup,
                     s.beta_start,
                     s.beta_end,
                     s.early_stop_loss,
                     s.seed,
                     s.keep_nearest_if_worse,
                     s.readout_share,
                     static_cast<int>(s.scope),
                     s.block_images_per_step};
  const std::string text = key.dump();
  return fnv1a64_hex(text.data(), text.size());
}

void save_rounding_checkpoint(const std::string& path, const std::string& key,
                              const std::vector<CompressedLayer>& layers,
                              const std::map<std::string, LayerRoundingResult>& finished) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json records = nlohmann::json::array();
  for (const CompressedLayer& l : layers) {
    auto it = finished.find(l.layer);
    if (it == finished.end()) continue;
    const LayerRoundingResult& r = it->second;
    const auto q = quantized_of(l);
    for (size_t k = 0; k < q.size(); ++k) tensors.emplace_back(l.layer + "/codes" + std::to_string(k), q[k]->codes);
    records.push_back({{"layer", l.layer},
                       {"iterations", r.iterations},
                       {"nearest_error", r.nearest_error},
                       {"learned_error", r.learned_error},
                       {"flipped", r.flipped_fraction},
                       {"kept_nearest", r.kept_nearest},
                       {"group", r.group},
                       {"seconds", r.seconds}});
  }
  write_tensors(path, tensors, {{"lorq_rounding_key", key}, {"layers", records.dump()}});
}

std::vector<LayerRoundingResult> load_rounding_checkpoint(const std::string& path, const std::string& key,
                                                          std::vector<CompressedLayer>& layers,
                                                          std::vector<std::string>* warnings) {
  if (!std::filesystem::exists(path)) return {};
  try {
    SafetensorsFile f = SafetensorsFile::open(path);
    const auto& meta = f.metadata();
    if (!meta.count("lorq_rounding_key") || meta.at("lorq_rounding_key") != key)
      throw Error(path, "stale checkpoint (made for other layers, images or settings)");
    if (!meta.count("layers")) throw Error(path, "no layer records");
    const nlohmann::json records = nlohmann::json::parse(meta.at("layers"));
    const auto tensors = read_all_tensors(f, false);
    // Validate everything first, so that a bad file changes nothing.
    std::vector<std::pair<QuantizedTensor*, at::Tensor>> codes;
    std::vector<std::pair<CompressedLayer*, LayerRoundingResult>> results;
    for (const nlohmann::json& rec : records) {
      LayerRoundingResult r;
      r.layer = rec.at("layer").get<std::string>();
      r.iterations = rec.at("iterations").get<int>();
      r.nearest_error = rec.at("nearest_error").get<double>();
      r.learned_error = rec.at("learned_error").get<double>();
      r.flipped_fraction = rec.at("flipped").get<double>();
      r.kept_nearest = rec.at("kept_nearest").get<bool>();
      r.group = rec.value("group", 1);
      if (r.group < 1) throw Error(path, "layer '" + r.layer + "' has a group below 1");
      r.seconds = rec.at("seconds").get<double>();
      CompressedLayer* layer = nullptr;
      for (CompressedLayer& l : layers)
        if (l.layer == r.layer) layer = &l;
      if (!layer) throw Error(path, "unknown layer '" + r.layer + "'");
      const auto q = quantized_of(*layer);
      for (size_t k = 0; k < q.size(); ++k) {
        const std::string name = r.layer + "/codes" + std::to_string(k);
        auto it = tensors.find(name);
        if (it == tensors.end()) throw Error(path, "missing tensor '" + name + "'");
        const at::Tensor& c = it->second;
        if (c.scalar_type() != at::kByte || c.sizes() != q[k]->codes.sizes() ||
            c.max().item<int>() > (1 << q[k]->params.bits) - 1)
          throw Error(path, "tensor '" + name + "' does not fit the layer's quantizer");
        codes.emplace_back(q[k], c);
      }
      results.emplace_back(layer, r);
    }
    std::vector<LayerRoundingResult> out;
    for (auto& [q, c] : codes) q->codes = c;
    for (auto& [layer, r] : results) {
      layer->rounding_learned = !r.kept_nearest;
      out.push_back(r);
    }
    return out;
  } catch (const std::exception& e) {
    if (warnings) warnings->push_back(std::string("ignored the rounding checkpoint: ") + e.what());
    return {};
  }
}

}  // namespace lorq
