#include "lorq/models/yolos_config.h"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/json_fields.h"

namespace lorq {

using nlohmann::json;

namespace {

void require_positive(int value, const char* key, const std::string& source) {
  if (value <= 0)
    throw Error(source, std::string("field '") + key + "' must be positive, got " + std::to_string(value));
}

// id2label's keys are decimal ids; HF orders labels by id, and they must be exactly 0..n-1.
std::vector<std::string> labels_by_id(const json& id2label, const std::string& source) {
  if (!id2label.is_object()) throw Error(source, "field 'id2label' must be an object of id -> name");
  std::map<long, std::string> by_id;
  for (auto it = id2label.begin(); it != id2label.end(); ++it) {
    size_t used = 0;
    long id = -1;
    try {
      id = std::stol(it.key(), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != it.key().size() || id < 0) throw Error(source, "id2label key '" + it.key() + "' is not a class id");
    if (!it.value().is_string()) throw Error(source, "id2label['" + it.key() + "'] is not a string");
    by_id[id] = it.value().get<std::string>();
  }
  std::vector<std::string> names;
  for (const auto& [id, name] : by_id) {
    if (id != static_cast<long>(names.size()))
      throw Error(source, "id2label ids must be 0.." + std::to_string(by_id.size() - 1) + ", id " +
                              std::to_string(names.size()) + " is missing");
    names.push_back(name);
  }
  return names;
}

}  // namespace

void set_default_yolos_preprocessing(YolosConfig& c) {
  Preprocessing& p = c.preprocessing;
  p = Preprocessing();
  // YolosImageProcessor's defaults: shortest edge 800, longest 1333, both sides floored to a multiple of 16, the
  // torchvision backend's antialiased uint8 bilinear resize (io/hf_resize.h).
  p.resize = ResizeMode::HfShortestLongest;
  p.shortest_edge = 800;
  p.longest_edge = 1333;
  p.size_multiple = 16;
  p.interpolation = "bilinear";
  p.crop_pct = 1.0;
  p.input_channels = c.num_channels;
  // The nominal input (a square image's): the shortest edge, in whole patches.
  p.input_height = p.input_width = p.shortest_edge - p.shortest_edge % p.size_multiple;
}

YolosConfig parse_yolos_config(const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);
  YolosConfig c;
  c.source = source;
  c.source_json = text;
  std::string model_type;
  read_if(j, "model_type", model_type, source);
  if (model_type != "yolos") throw Error(source, "model_type is '" + model_type + "', expected 'yolos'");

  read_if(j, "_name_or_path", c.name, source);
  if (c.name.empty()) {
    std::vector<std::string> architectures;
    read_if(j, "architectures", architectures, source);
    c.name = architectures.empty() ? "YolosForObjectDetection" : architectures[0];
  }
  read_if(j, "hidden_size", c.hidden_size, source);
  read_if(j, "num_hidden_layers", c.num_hidden_layers, source);
  read_if(j, "num_attention_heads", c.num_attention_heads, source);
  read_if(j, "intermediate_size", c.intermediate_size, source);
  read_if(j, "hidden_act", c.hidden_act, source);
  read_if(j, "layer_norm_eps", c.layer_norm_eps, source);
  read_if(j, "patch_size", c.patch_size, source);
  read_if(j, "num_channels", c.num_channels, source);
  read_if(j, "qkv_bias", c.qkv_bias, source);
  read_if(j, "num_detection_tokens", c.num_detection_tokens, source);
  read_if(j, "use_mid_position_embeddings", c.use_mid_position_embeddings, source);

  // image_size is [height, width] (YolosConfig); a single number means a square.
  if (auto it = j.find("image_size"); it != j.end() && !it->is_null()) {
    if (it->is_number_integer()) {
      c.image_height = c.image_width = it->get<int>();
    } else if (it->is_array() && it->size() == 2 && (*it)[0].is_number_integer() && (*it)[1].is_number_integer()) {
      c.image_height = (*it)[0].get<int>();
      c.image_width = (*it)[1].get<int>();
    } else {
      throw Error(source, "field 'image_size' must be [height, width]");
    }
  }

  // Labels as PretrainedConfig derives them: id2label wins, else num_labels ("LABEL_i" names), else 2.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    c.label_names = labels_by_id(*it, source);
    c.num_labels = static_cast<int>(c.label_names.size());
    int declared = c.num_labels;
    read_if(j, "num_labels", declared, source);
    if (declared != c.num_labels)
      throw Error(source, "num_labels is " + std::to_string(declared) + " but id2label has " +
                              std::to_string(c.num_labels) + " labels");
  } else {
    c.num_labels = 2;
    read_if(j, "num_labels", c.num_labels, source);
    for (int i = 0; i < c.num_labels; ++i) c.label_names.push_back("LABEL_" + std::to_string(i));
  }

  require_positive(c.hidden_size, "hidden_size", source);
  require_positive(c.num_hidden_layers, "num_hidden_layers", source);
  require_positive(c.num_attention_heads, "num_attention_heads", source);
  require_positive(c.intermediate_size, "intermediate_size", source);
  require_positive(c.patch_size, "patch_size", source);
  require_positive(c.num_channels, "num_channels", source);
  require_positive(c.num_detection_tokens, "num_detection_tokens", source);
  require_positive(c.num_labels, "num_labels", source);
  if (c.hidden_size % c.num_attention_heads != 0)
    throw Error(source, "hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                            std::to_string(c.num_attention_heads));
  if (c.image_height < c.patch_size || c.image_width < c.patch_size)
    throw Error(source, "image_size must be at least one patch (" + std::to_string(c.patch_size) + ") per side");
  if (!(c.layer_norm_eps > 0)) throw Error(source, "layer_norm_eps must be positive");
  if (c.hidden_act != "gelu" && c.hidden_act != "gelu_new" && c.hidden_act != "gelu_pytorch_tanh" &&
      c.hidden_act != "relu")
    throw Error(source, "unsupported hidden_act '" + c.hidden_act + "' (gelu, gelu_new, gelu_pytorch_tanh, relu)");
  set_default_yolos_preprocessing(c);
  return c;
}

void parse_yolos_preprocessor(YolosConfig& c, const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);
  Preprocessing& p = c.preprocessing;
  c.preprocessor_source = source;
  std::string processor;
  read_if(j, "image_processor_type", processor, source);
  if (!processor.empty() && processor != "YolosImageProcessor" && processor != "DetrImageProcessor")
    throw Error(source, "unsupported image_processor_type '" + processor + "' (YolosImageProcessor)");

  // Steps the image pipeline always takes; a processor that turns one off would be silently run differently.
  auto require_true = [&](const char* key) {
    bool value = true;
    read_if(j, key, value, source);
    if (!value) throw Error(source, std::string("'") + key + "' false is not supported");
  };
  require_true("do_resize");
  require_true("do_rescale");
  require_true("do_normalize");
  double rescale = 1.0 / 255.0;
  read_if(j, "rescale_factor", rescale, source);
  if (std::abs(rescale - 1.0 / 255.0) > 1e-12)
    throw Error(source, "rescale_factor " + std::to_string(rescale) + " is not supported (only 1/255)");

  std::vector<float> mean, stdv;
  read_if(j, "image_mean", mean, source);
  read_if(j, "image_std", stdv, source);
  if (!mean.empty()) {
    if (mean.size() != 3) throw Error(source, "image_mean must have 3 values");
    std::copy(mean.begin(), mean.end(), p.mean.begin());
  }
  if (!stdv.empty()) {
    if (stdv.size() != 3) throw Error(source, "image_std must have 3 values");
    for (float s : stdv)
      if (!(s > 0)) throw Error(source, "image_std values must be positive");
    std::copy(stdv.begin(), stdv.end(), p.std.begin());
  }

  // Only the processors' default (bilinear, antialiased uint8) is reproduced bit for bit (io/hf_resize.h).
  int resample = 2;
  read_if(j, "resample", resample, source);
  if (resample != 2)
    throw Error(source, "unsupported resample " + std::to_string(resample) +
                            " (only 2, bilinear, the image processor's default, is reproduced)");

  if (auto it = j.find("size"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw Error(source, "'size' must be an object");
    int shortest = 0, longest = 0, height = 0, width = 0;
    read_if(*it, "shortest_edge", shortest, source);
    read_if(*it, "longest_edge", longest, source);
    read_if(*it, "height", height, source);
    read_if(*it, "width", width, source);
    if (shortest > 0 && longest > 0) {
      if (longest < shortest) throw Error(source, "size.longest_edge is below size.shortest_edge");
      p.resize = ResizeMode::HfShortestLongest;
      p.shortest_edge = shortest;
      p.longest_edge = longest;
      p.input_height = p.input_width = shortest - shortest % p.size_multiple;
    } else if (height > 0 && width > 0) {  // a fixed size: no aspect-ratio rule
      p.resize = ResizeMode::HfFixedSize;
      p.input_height = height;
      p.input_width = width;
    } else {
      throw Error(source, "'size' needs positive shortest_edge and longest_edge, or height and width");
    }
  }
}

}  // namespace lorq
