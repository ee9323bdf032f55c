// Model loading: resolve files, read the config (or infer it), dispatch to the architecture.
#include <ATen/ATen.h>

#include "lorq/error.h"
#include "lorq/model.h"
#include "lorq/tensor_io.h"
#include "lorq/vit.h"

namespace lorq {

std::unique_ptr<Model> load_model(const std::string& path) {
  const ModelFiles files = locate_model_files(path);
  SafetensorsFile file = SafetensorsFile::open(files.weights);
  ModelConfig config;
  if (!files.config.empty()) config = read_model_config(files.config);
  config.source = files.config.empty() ? files.weights : files.config;

  std::map<std::string, std::vector<int64_t>> shapes;
  for (const TensorInfo& t : file.tensors()) shapes[t.name] = t.shape;
  complete_model_config(config, shapes, files.weights);

  std::map<std::string, at::Tensor> tensors = read_all_tensors(file, /*to_float=*/true);
  return std::make_unique<VisionTransformer>(std::move(config), std::move(tensors), files.weights);
}

}  // namespace lorq
