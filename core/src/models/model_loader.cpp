// Model loading: resolve files, read the config (or infer it), dispatch to the architecture.
#include <ATen/ATen.h>

#include <filesystem>

#include "lorq/quant/activation_quant.h"
#include "lorq/common/error.h"
#include "lorq/io/export.h"
#include "lorq/io/packed_export.h"
#include "lorq/models/model.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/vit.h"

namespace lorq {

std::unique_ptr<Model> load_model(const std::string& path) {
  const ModelFiles files = locate_model_files(path);
  SafetensorsFile file = SafetensorsFile::open(files.weights);
  ModelConfig config;
  if (!files.config.empty()) config = read_model_config(files.config);
  config.source = files.config.empty() ? files.weights : files.config;

  // An export's lorq-config.json and its weights must be of a format version this build reads, and the same one.
  const std::string lorq_config = (std::filesystem::path(files.weights).parent_path() / "lorq-config.json").string();
  const int version = export_format_version(file.metadata(), files.weights);
  if (version != 0 && std::filesystem::exists(lorq_config) && check_lorq_config_version(lorq_config) != version)
    throw Error(lorq_config, "format version differs from " + files.weights + "'s " + std::to_string(version));
  std::map<std::string, at::Tensor> tensors = read_all_tensors(file, /*to_float=*/false);
  // A lorq export stores integer codes; decode them to the exact weights the compressed model used.
  decode_compressed_tensors(tensors, file);
  const ActivationQuantization activations = take_activation_quantizers(tensors, file.metadata(), files.weights);
  for (auto& [name, t] : tensors) t = t.to(at::kFloat);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : tensors) shapes[name] = t.sizes().vec();
  complete_model_config(config, shapes, files.weights);
  auto model = std::make_unique<VisionTransformer>(std::move(config), std::move(tensors), files.weights);
  // An export made with activation quantization runs with its quantizers on, exactly as it was evaluated.
  try {
    if (!activations.quantizers.empty()) enable_activation_quantization(*model, activations);
  } catch (const Error& e) {
    throw Error(files.weights, e.what());
  }
  return model;
}

}  // namespace lorq
