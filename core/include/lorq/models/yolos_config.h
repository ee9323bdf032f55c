#pragma once
// Hugging Face YolosConfig (config.json, model_type "yolos") and the YolosImageProcessor settings of
// preprocessor_config.json. Field names and defaults are those of transformers' configuration_yolos.py.
#include <string>
#include <vector>

#include "lorq/models/preprocessing.h"

namespace lorq {

struct YolosConfig {
  std::string name;  // "_name_or_path" when the config has one, else its first "architectures" entry
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  std::string hidden_act = "gelu";  // gelu (erf) | gelu_new | gelu_pytorch_tanh | relu
  double layer_norm_eps = 1e-12;
  int image_height = 512;  // config "image_size" [h, w]: the grid the position embeddings were learned on
  int image_width = 864;
  int patch_size = 16;
  int num_channels = 3;
  bool qkv_bias = true;
  int num_detection_tokens = 100;
  bool use_mid_position_embeddings = true;
  int num_labels = 0;                    // without "no object"; the classifier has num_labels + 1 outputs
  std::vector<std::string> label_names;  // id2label, ordered by id
  Preprocessing preprocessing;
  std::string source;                // config.json's path, for messages
  std::string source_json;           // its text, written back unchanged beside an export
  std::string preprocessor_source;   // preprocessor_config.json's path ("" when absent: the processor defaults)

  int grid_height() const { return image_height / patch_size; }
  int grid_width() const { return image_width / patch_size; }
};

// Parses config.json. Throws lorq::Error naming `source` on malformed JSON, wrong types or impossible values.
YolosConfig parse_yolos_config(const std::string& json_text, const std::string& source);
// Reads preprocessor_config.json into config.preprocessing (mean/std, resize sizes, interpolation). Throws
// lorq::Error naming `source`. Without the file the YolosImageProcessor defaults stay (shortest edge 800, longest
// 1333, bilinear, ImageNet mean/std).
void parse_yolos_preprocessor(YolosConfig& config, const std::string& json_text, const std::string& source);
// The YolosImageProcessor defaults, with the timm-transform fields set to the config's own grid.
void set_default_yolos_preprocessing(YolosConfig& config);

}  // namespace lorq
