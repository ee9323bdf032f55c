#include "lorq/io/timm_export.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/tensor_io.h"
#include "lorq/models/model.h"

namespace lorq {

void export_timm_checkpoint(const std::string& export_dir, const std::string& out_dir) {
  std::unique_ptr<Model> model = load_model(export_dir);
  if (model->has_activation_hooks())
    throw Error(export_dir, "quantizes activations; a float timm checkpoint cannot reproduce it");
  // Per-token activation quantization (LRA-QViT, MLoRQ --per-token) is installed as linear overrides, not hooks.
  for (const auto& l : model->linear_layers())
    if (model->has_linear_override(l.name))
      throw Error(export_dir, "quantizes activations per token; a float timm checkpoint cannot reproduce it");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error(out_dir, "cannot create the output folder (" + ec.message() + ")");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [key, t] : model->named_tensors()) tensors.emplace_back(key, t.contiguous());
  write_tensors(out_dir + "/model.safetensors", tensors, {{"format", "pt"}});
  write_text_atomically(out_dir + "/config.json", model->config_json() + "\n");
}

}  // namespace lorq
