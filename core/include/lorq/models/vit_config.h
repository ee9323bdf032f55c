#pragma once
// timm VisionTransformer's configuration: architecture arguments plus the evaluation preprocessing and class names.
// Read from timm's config.json; missing fields are inferred from the checkpoint's tensor shapes.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lorq/models/preprocessing.h"

namespace lorq {

struct VitConfig {
  std::string architecture;  // e.g. deit_tiny_patch16_224
  int img_size = 0;
  int patch_size = 0;
  int in_chans = 3;
  int embed_dim = 0;
  int depth = 0;
  int num_heads = 0;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  bool class_token = true;
  std::string global_pool = "token";  // token | avg
  bool fc_norm = false;               // timm uses fc_norm instead of norm when pooling by average
  int num_classes = 0;
  double norm_eps = 1e-6;
  Preprocessing preprocessing;
  std::vector<std::string> label_names;
  std::string source;       // the file it was read from, for messages
  std::string source_json;  // the config.json text it was parsed from ("" when inferred from the tensors)

  std::string label(int index) const;
};

// Parses timm's config.json. Throws lorq::Error naming the file on unreadable or malformed JSON.
VitConfig read_vit_config(const std::string& path);
VitConfig parse_vit_config(const std::string& json_text, const std::string& source);
std::string vit_config_to_json(const VitConfig& config);

// Fills every field that is still unset (0) from the checkpoint's tensor shapes (embed dim from cls_token, depth
// from the block count, heads = dim / 64, patch size from the patch-embed kernel, classes from the head) and
// checks that the result is consistent. Throws lorq::Error naming `source` when something cannot be inferred.
void complete_vit_config(VitConfig& config, const std::map<std::string, std::vector<int64_t>>& shapes,
                           const std::string& source);

}  // namespace lorq
