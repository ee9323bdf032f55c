#pragma once
// Hugging Face SegformerConfig (config.json) plus the SegformerImageProcessor settings (preprocessor_config.json)
// that the model's Preprocessing carries. Only the fields the forward pass and the evaluation need are parsed; the
// config.json text itself is kept so that an export writes it back unchanged.
#include <cstdint>
#include <string>
#include <vector>

#include "lorq/models/preprocessing.h"

namespace lorq {

// SegformerImageProcessor's defaults: resize to 512x512 (bilinear, aspect ratio not kept: timm's "squash" crop
// mode), scale by 1/255, ImageNet mean/std.
Preprocessing segformer_default_preprocessing();

struct SegformerConfig {
  int num_channels = 3;
  int num_encoder_blocks = 4;
  std::vector<int> depths{2, 2, 2, 2};
  std::vector<int> sr_ratios{8, 4, 2, 1};
  std::vector<int> hidden_sizes{32, 64, 160, 256};
  std::vector<int> patch_sizes{7, 3, 3, 3};
  std::vector<int> strides{4, 2, 2, 2};
  std::vector<int> num_attention_heads{1, 2, 5, 8};
  std::vector<int> mlp_ratios{4, 4, 4, 4};
  int decoder_hidden_size = 256;
  int num_labels = 0;
  std::vector<std::string> label_names;  // by class index (id2label); "" where id2label has no entry
  std::string hidden_act = "gelu";
  Preprocessing preprocessing = segformer_default_preprocessing();  // preprocessor_config.json may change it
  std::string source;                                               // config.json path, for messages
  std::string source_json;                                          // the config.json text ("" when built in code)
  std::string preprocessor_source;                                  // preprocessor_config.json path ("" when absent)

  int total_depth() const;  // transformer blocks over all encoder stages
  int64_t mlp_hidden(int stage) const { return int64_t(hidden_sizes.at(stage)) * mlp_ratios.at(stage); }
};

// Parses a Hugging Face SegFormer config.json. Throws lorq::Error naming `source` on malformed JSON, a field of the
// wrong type, lists whose length differs from num_encoder_blocks, or values the forward pass cannot run.
SegformerConfig parse_segformer_config(const std::string& json_text, const std::string& source);
// Reads a SegformerImageProcessor preprocessor_config.json into `config.preprocessing` (size, resample,
// image_mean/std). Throws lorq::Error naming `source` for settings the engine cannot reproduce (no resize, a rescale
// factor other than 1/255).
void parse_segformer_preprocessor(const std::string& json_text, const std::string& source, SegformerConfig& config);
// The config in Hugging Face's config.json format (for a model built in code, e.g. a freshly initialised one).
std::string segformer_config_to_json(const SegformerConfig& config);

}  // namespace lorq
