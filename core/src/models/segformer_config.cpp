#include "lorq/models/segformer_config.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "lorq/common/error.h"
#include "lorq/common/json_fields.h"

namespace lorq {

using nlohmann::json;

Preprocessing segformer_default_preprocessing() {
  Preprocessing p;
  p.input_height = p.input_width = 512;
  p.interpolation = "bilinear";
  p.crop_pct = 1.0;
  p.crop_mode = "squash";
  p.resize = ResizeMode::HfFixedSize;  // the processor's torchvision backend, bit for bit (io/hf_resize.h)
  return p;  // mean/std: Preprocessing's ImageNet defaults, as the processor's
}

int SegformerConfig::total_depth() const {
  int n = 0;
  for (int d : depths) n += d;
  return n;
}

namespace {

void check_list(const std::vector<int>& v, const char* name, int n, int min_value, const std::string& source) {
  if (static_cast<int>(v.size()) != n)
    throw Error(source, std::string("'") + name + "' has " + std::to_string(v.size()) + " entries but " +
                            "num_encoder_blocks is " + std::to_string(n));
  for (int x : v)
    if (x < min_value)
      throw Error(source, std::string("'") + name + "' values must be at least " + std::to_string(min_value));
}

}  // namespace

SegformerConfig parse_segformer_config(const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);
  SegformerConfig c;
  c.source = source;
  c.source_json = text;
  read_if(j, "num_channels", c.num_channels, source);
  read_if(j, "num_encoder_blocks", c.num_encoder_blocks, source);
  read_if(j, "depths", c.depths, source);
  read_if(j, "sr_ratios", c.sr_ratios, source);
  read_if(j, "hidden_sizes", c.hidden_sizes, source);
  read_if(j, "patch_sizes", c.patch_sizes, source);
  read_if(j, "strides", c.strides, source);
  read_if(j, "num_attention_heads", c.num_attention_heads, source);
  read_if(j, "mlp_ratios", c.mlp_ratios, source);
  read_if(j, "decoder_hidden_size", c.decoder_hidden_size, source);
  read_if(j, "hidden_act", c.hidden_act, source);

  if (c.num_channels < 1) throw Error(source, "num_channels must be positive");
  if (c.num_encoder_blocks < 1) throw Error(source, "num_encoder_blocks must be positive");
  const int n = c.num_encoder_blocks;
  check_list(c.depths, "depths", n, 1, source);
  check_list(c.sr_ratios, "sr_ratios", n, 1, source);
  check_list(c.hidden_sizes, "hidden_sizes", n, 1, source);
  check_list(c.patch_sizes, "patch_sizes", n, 1, source);
  check_list(c.strides, "strides", n, 1, source);
  check_list(c.num_attention_heads, "num_attention_heads", n, 1, source);
  check_list(c.mlp_ratios, "mlp_ratios", n, 1, source);
  for (int i = 0; i < n; ++i)
    if (c.hidden_sizes[i] % c.num_attention_heads[i] != 0)
      throw Error(source, "hidden_sizes[" + std::to_string(i) + "] is not a multiple of num_attention_heads[" +
                              std::to_string(i) + "]");
  if (c.decoder_hidden_size < 1) throw Error(source, "decoder_hidden_size must be positive");
  c.preprocessing.input_channels = c.num_channels;
  // The Mix-FFN activation is ACT2FN[hidden_act]; only the exact (erf) GELU is implemented.
  if (c.hidden_act != "gelu")
    throw Error(source, "unsupported hidden_act '" + c.hidden_act + "' (only \"gelu\" is implemented)");

  // id2label's keys are the class indices as strings; num_labels follows from it as in Hugging Face's config.
  if (auto it = j.find("id2label"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw Error(source, "'id2label' must be an object {\"0\": \"name\", ...}");
    int max_id = -1;
    std::vector<std::pair<int, std::string>> entries;
    for (const auto& [key, value] : it->items()) {
      int id = -1;
      try {
        size_t used = 0;
        id = std::stoi(key, &used);
        if (used != key.size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0 || !value.is_string())
        throw Error(source, "'id2label' entry '" + key + "' must map a class index to a name");
      entries.emplace_back(id, value.get<std::string>());
      max_id = std::max(max_id, id);
    }
    c.label_names.assign(max_id + 1, "");
    for (const auto& [id, name] : entries) c.label_names[id] = name;
    c.num_labels = max_id + 1;
  }
  int num_labels = 0;
  read_if(j, "num_labels", num_labels, source);
  if (num_labels > 0) {
    if (c.num_labels > 0 && num_labels != c.num_labels)
      throw Error(source, "num_labels " + std::to_string(num_labels) + " disagrees with id2label (" +
                              std::to_string(c.num_labels) + " classes)");
    c.num_labels = num_labels;
  }
  return c;
}

void parse_segformer_preprocessor(const std::string& text, const std::string& source, SegformerConfig& config) {
  const json j = parse_json_object(text, source);
  Preprocessing& p = config.preprocessing;
  bool do_resize = true, do_rescale = true, do_normalize = true;
  read_if(j, "do_resize", do_resize, source);
  read_if(j, "do_rescale", do_rescale, source);
  read_if(j, "do_normalize", do_normalize, source);
  if (!do_resize) throw Error(source, "do_resize false is not supported (the model needs a fixed input size)");
  if (!do_rescale) throw Error(source, "do_rescale false is not supported (pixels are always scaled by 1/255)");
  double rescale = 1.0 / 255.0;
  read_if(j, "rescale_factor", rescale, source);
  if (std::abs(rescale * 255.0 - 1.0) > 1e-9)
    throw Error(source, "rescale_factor " + std::to_string(rescale) + " is not supported (only 1/255)");

  if (auto it = j.find("size"); it != j.end() && !it->is_null()) {
    // Current processors write {"height", "width"}; older SegformerFeatureExtractor configs a single int.
    if (it->is_number_integer()) {
      p.input_height = p.input_width = it->get<int>();
    } else if (it->is_object() && it->contains("height") && it->contains("width")) {
      read_if(*it, "height", p.input_height, source);
      read_if(*it, "width", p.input_width, source);
    } else {
      throw Error(source, "'size' must be {\"height\": H, \"width\": W} or an integer");
    }
  }
  if (p.input_height < 1 || p.input_width < 1) throw Error(source, "'size' must be positive");
  p.input_channels = config.num_channels;

  int resample = 2;  // PIL.Image.BILINEAR, the SegformerImageProcessor default
  read_if(j, "resample", resample, source);
  // Only the processors' default (bilinear, antialiased uint8) is reproduced bit for bit (io/hf_resize.h).
  if (resample != 2)
    throw Error(source, "unsupported resample " + std::to_string(resample) +
                            " (only 2, bilinear, the image processor's default, is reproduced)");
  p.interpolation = "bilinear";

  std::vector<float> mean, stdv;
  read_if(j, "image_mean", mean, source);
  read_if(j, "image_std", stdv, source);
  if (!do_normalize) {
    mean = {0.f, 0.f, 0.f};
    stdv = {1.f, 1.f, 1.f};
  }
  if (!mean.empty()) {
    if (mean.size() != 3) throw Error(source, "'image_mean' must have 3 values");
    std::copy(mean.begin(), mean.end(), p.mean.begin());
  }
  if (!stdv.empty()) {
    if (stdv.size() != 3) throw Error(source, "'image_std' must have 3 values");
    for (float s : stdv)
      if (!(s > 0)) throw Error(source, "'image_std' values must be positive");
    std::copy(stdv.begin(), stdv.end(), p.std.begin());
  }
  config.preprocessor_source = source;
}

std::string segformer_config_to_json(const SegformerConfig& c) {
  json id2label = json::object(), label2id = json::object();
  for (int i = 0; i < c.num_labels; ++i) {
    const std::string name = i < static_cast<int>(c.label_names.size()) && !c.label_names[i].empty()
                                 ? c.label_names[i]
                                 : "LABEL_" + std::to_string(i);
    id2label[std::to_string(i)] = name;
    label2id[name] = i;
  }
  json j = {
      {"architectures", {"SegformerForSemanticSegmentation"}},
      {"model_type", "segformer"},
      {"num_channels", c.num_channels},
      {"num_encoder_blocks", c.num_encoder_blocks},
      {"depths", c.depths},
      {"sr_ratios", c.sr_ratios},
      {"hidden_sizes", c.hidden_sizes},
      {"patch_sizes", c.patch_sizes},
      {"strides", c.strides},
      {"num_attention_heads", c.num_attention_heads},
      {"mlp_ratios", c.mlp_ratios},
      {"hidden_act", c.hidden_act},
      {"decoder_hidden_size", c.decoder_hidden_size},
      {"reshape_last_stage", true},
      {"semantic_loss_ignore_index", 255},
      {"id2label", id2label},
      {"label2id", label2id},
      {"torch_dtype", "float32"},
  };
  return j.dump(2);
}

}  // namespace lorq
