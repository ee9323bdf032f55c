// Model loading: resolve files, read the config, decode a lorq export's codes, ask the registry for the
// architecture, build it, and reinstall an export's activation quantizers.
#include <ATen/ATen.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/export.h"
#include "lorq/io/packed_export.h"
#include "lorq/io/tensor_io.h"
#include "lorq/lraqvit/lraqvit_export.h"
#include "lorq/models/model.h"
#include "lorq/models/registry.h"
#include "lorq/quant/activation_quant.h"

namespace lorq {

namespace {

// The two fields the registry looks at first; the architecture parses the rest itself.
void read_recognition_fields(CheckpointInfo& info) {
  if (info.files.config.empty()) return;
  info.config_text = read_text_file(info.files.config);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(info.config_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(info.files.config, std::string("invalid JSON (") + e.what() + ")");
  }
  if (!j.is_object()) throw Error(info.files.config, "the config is not a JSON object");
  if (j.contains("model_type") && j["model_type"].is_string()) info.model_type = j["model_type"].get<std::string>();
  if (j.contains("architecture") && j["architecture"].is_string())
    info.timm_architecture = j["architecture"].get<std::string>();
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& path) {
  CheckpointInfo info;
  info.files = locate_model_files(path);
  read_recognition_fields(info);
  SafetensorsFile file = SafetensorsFile::open(info.files.weights);
  // An export's lorq-config.json and its weights must be of a format version this build reads, and the same one.
  const std::string lorq_config =
      (std::filesystem::path(info.files.weights).parent_path() / "lorq-config.json").string();
  const int version = export_format_version(file.metadata(), info.files.weights);
  if (version != 0 && std::filesystem::exists(lorq_config) && check_lorq_config_version(lorq_config) != version)
    throw Error(lorq_config, "format version differs from " + info.files.weights + "'s " + std::to_string(version));
  std::map<std::string, at::Tensor> tensors = read_all_tensors(file, /*to_float=*/false);
  // A lorq export stores integer codes; decode them to the exact weights the compressed model used.
  decode_compressed_tensors(tensors, file);
  const ActivationQuantization activations = take_activation_quantizers(tensors, file.metadata(), info.files.weights);
  for (auto& [name, t] : tensors) t = t.to(at::kFloat);
  for (const auto& [name, t] : tensors) info.shapes[name] = t.sizes().vec();

  const Architecture& arch = recognise_architecture(info);
  std::unique_ptr<Model> model = arch.build(info, std::move(tensors));
  // An export made with activation quantization runs with its quantizers on, exactly as it was evaluated.
  try {
    if (!activations.quantizers.empty()) enable_activation_quantization(*model, activations);
    lraqvit::install_exported_token_quantization(*model, file);  // an LRA-QViT export's per-token quantizers
  } catch (const Error& e) {
    throw Error(info.files.weights, e.what());
  }
  return model;
}

}  // namespace lorq
