#include "lorq/models/vit_config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "lorq/common/error.h"
#include "lorq/common/json_fields.h"

namespace lorq {

using nlohmann::json;

std::string VitConfig::label(int index) const {
  if (index >= 0 && index < static_cast<int>(label_names.size())) return label_names[index];
  return "class " + std::to_string(index);
}

namespace {

// timm names encode patch size and resolution: vit_base_patch16_224, deit_tiny_patch16_224.
void infer_from_name(VitConfig& c) {
  std::smatch m;
  static const std::regex re("patch(\\d+)_(\\d+)");
  if (std::regex_search(c.architecture, m, re)) {
    if (c.patch_size == 0) c.patch_size = std::stoi(m[1]);
    if (c.img_size == 0) c.img_size = std::stoi(m[2]);
  }
}

}  // namespace

VitConfig parse_vit_config(const std::string& text, const std::string& source) {
  const json j = parse_json_object(text, source);

  VitConfig c;
  c.source = source;
  c.source_json = text;
  read_if(j, "architecture", c.architecture, source);
  read_if(j, "num_classes", c.num_classes, source);
  read_if(j, "global_pool", c.global_pool, source);
  read_if(j, "label_names", c.label_names, source);

  if (auto it = j.find("model_args"); it != j.end() && it->is_object()) {
    const json& a = *it;
    read_if(a, "img_size", c.img_size, source);
    read_if(a, "patch_size", c.patch_size, source);
    read_if(a, "in_chans", c.in_chans, source);
    read_if(a, "embed_dim", c.embed_dim, source);
    read_if(a, "depth", c.depth, source);
    read_if(a, "num_heads", c.num_heads, source);
    read_if(a, "mlp_ratio", c.mlp_ratio, source);
    read_if(a, "qkv_bias", c.qkv_bias, source);
    read_if(a, "class_token", c.class_token, source);
    read_if(a, "global_pool", c.global_pool, source);
    read_if(a, "num_classes", c.num_classes, source);
    if (a.contains("fc_norm") && a["fc_norm"].is_boolean()) c.fc_norm = a["fc_norm"].get<bool>();
  }
  if (c.global_pool == "avg" && !(j.contains("model_args") && j["model_args"].contains("fc_norm"))) c.fc_norm = true;

  if (auto it = j.find("pretrained_cfg"); it != j.end() && it->is_object()) {
    const json& p = *it;
    Preprocessing& pp = c.preprocessing;
    std::vector<int> input_size;
    read_if(p, "input_size", input_size, source);
    if (!input_size.empty()) {
      if (input_size.size() != 3 || input_size[1] <= 0 || input_size[2] <= 0)
        throw Error(source, "pretrained_cfg.input_size must be [channels, height, width]");
      pp.input_channels = input_size[0];
      pp.input_height = input_size[1];
      pp.input_width = input_size[2];
      if (c.img_size == 0) c.img_size = input_size[1];
    }
    read_if(p, "interpolation", pp.interpolation, source);
    read_if(p, "crop_pct", pp.crop_pct, source);
    read_if(p, "crop_mode", pp.crop_mode, source);
    std::vector<float> mean, stdv;
    read_if(p, "mean", mean, source);
    read_if(p, "std", stdv, source);
    if (!mean.empty()) {
      if (mean.size() != 3) throw Error(source, "pretrained_cfg.mean must have 3 values");
      std::copy(mean.begin(), mean.end(), pp.mean.begin());
    }
    if (!stdv.empty()) {
      if (stdv.size() != 3) throw Error(source, "pretrained_cfg.std must have 3 values");
      for (float s : stdv)
        if (!(s > 0)) throw Error(source, "pretrained_cfg.std values must be positive");
      std::copy(stdv.begin(), stdv.end(), pp.std.begin());
    }
    if (c.num_classes == 0) read_if(p, "num_classes", c.num_classes, source);
    if (c.label_names.empty()) read_if(p, "label_names", c.label_names, source);
  }
  if (c.preprocessing.crop_pct <= 0 || c.preprocessing.crop_pct > 1.5)
    throw Error(source, "crop_pct must be in (0, 1.5]");
  if (c.preprocessing.interpolation != "bicubic" && c.preprocessing.interpolation != "bilinear" &&
      c.preprocessing.interpolation != "nearest")
    throw Error(source, "unsupported interpolation '" + c.preprocessing.interpolation + "'");
  if (c.global_pool != "token" && c.global_pool != "avg")
    throw Error(source, "unsupported global_pool '" + c.global_pool + "' (token or avg)");
  infer_from_name(c);
  return c;
}

VitConfig read_vit_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path, "cannot open the config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_vit_config(ss.str(), path);
}

std::string vit_config_to_json(const VitConfig& c) {
  const Preprocessing& p = c.preprocessing;
  json j = {
      {"architecture", c.architecture},
      {"num_classes", c.num_classes},
      {"num_features", c.embed_dim},
      {"global_pool", c.global_pool},
      {"model_args",
       {{"img_size", c.img_size},
        {"patch_size", c.patch_size},
        {"in_chans", c.in_chans},
        {"embed_dim", c.embed_dim},
        {"depth", c.depth},
        {"num_heads", c.num_heads},
        {"mlp_ratio", c.mlp_ratio},
        {"qkv_bias", c.qkv_bias},
        {"class_token", c.class_token},
        {"fc_norm", c.fc_norm}}},
      {"pretrained_cfg",
       {{"input_size", {p.input_channels, p.input_height, p.input_width}},
        {"interpolation", p.interpolation},
        {"crop_pct", p.crop_pct},
        {"crop_mode", p.crop_mode},
        {"mean", p.mean},
        {"std", p.std},
        {"num_classes", c.num_classes}}},
      {"label_names", c.label_names},
  };
  return j.dump(1);
}

void complete_vit_config(VitConfig& c, const std::map<std::string, std::vector<int64_t>>& shapes,
                           const std::string& source) {
  auto shape = [&](const std::string& name) -> const std::vector<int64_t>* {
    auto it = shapes.find(name);
    return it == shapes.end() ? nullptr : &it->second;
  };
  const auto* pe = shape("patch_embed.proj.weight");
  if (!pe || pe->size() != 4)
    throw Error(source, "no 4-d 'patch_embed.proj.weight': not a timm VisionTransformer checkpoint");
  if (c.embed_dim == 0) c.embed_dim = static_cast<int>((*pe)[0]);
  if (c.in_chans == 0) c.in_chans = static_cast<int>((*pe)[1]);
  if (c.patch_size == 0) c.patch_size = static_cast<int>((*pe)[2]);
  if ((*pe)[0] != c.embed_dim || (*pe)[2] != c.patch_size || (*pe)[3] != c.patch_size || (*pe)[1] != c.in_chans)
    throw Error(source, "patch_embed.proj.weight shape disagrees with the config (embed_dim/patch_size/in_chans)");
  if (const auto* cls = shape("cls_token")) {
    if (cls->empty() || cls->back() != c.embed_dim) throw Error(source, "cls_token width disagrees with embed_dim");
  } else {
    c.class_token = false;
  }
  int blocks = 0;
  while (shapes.count("blocks." + std::to_string(blocks) + ".attn.qkv.weight")) ++blocks;
  if (blocks == 0) throw Error(source, "no 'blocks.0.attn.qkv.weight': not a timm VisionTransformer checkpoint");
  if (c.depth == 0) c.depth = blocks;
  if (c.depth != blocks)
    throw Error(source, "config depth " + std::to_string(c.depth) + " but the checkpoint has " +
                            std::to_string(blocks) + " blocks");
  if (c.num_heads == 0) c.num_heads = std::max(1, c.embed_dim / 64);
  if (c.embed_dim % c.num_heads != 0) throw Error(source, "embed_dim is not divisible by num_heads");
  if (const auto* fc1 = shape("blocks.0.mlp.fc1.weight")) c.mlp_ratio = double((*fc1)[0]) / c.embed_dim;
  c.qkv_bias = shapes.count("blocks.0.attn.qkv.bias") > 0;
  if (const auto* head = shape("head.weight")) {
    if (c.num_classes == 0) c.num_classes = static_cast<int>((*head)[0]);
    if ((*head)[0] != c.num_classes)
      throw Error(source, "config has " + std::to_string(c.num_classes) + " classes but head.weight has " +
                              std::to_string((*head)[0]));
  } else {
    throw Error(source, "no 'head.weight': the checkpoint has no classifier head");
  }
  if (shapes.count("fc_norm.weight")) c.fc_norm = true;
  const auto* pos = shape("pos_embed");
  if (!pos || pos->size() != 3) throw Error(source, "no 3-d 'pos_embed'");
  const int64_t prefix = c.class_token ? 1 : 0;
  const int64_t patches = (*pos)[1] - prefix;
  int64_t grid = 0;
  while ((grid + 1) * (grid + 1) <= patches) ++grid;
  if (grid * grid != patches) throw Error(source, "pos_embed length is not a square patch grid plus class token");
  if (c.img_size == 0) c.img_size = static_cast<int>(grid * c.patch_size);
  if (c.img_size != grid * c.patch_size)
    throw Error(source, "img_size " + std::to_string(c.img_size) + " disagrees with pos_embed (" +
                            std::to_string(grid) + "x" + std::to_string(grid) + " patches)");
  if (c.preprocessing.input_height != c.img_size || c.preprocessing.input_width != c.img_size) {
    c.preprocessing.input_height = c.img_size;
    c.preprocessing.input_width = c.img_size;
  }
  if (c.architecture.empty()) c.architecture = "vit_custom_patch" + std::to_string(c.patch_size) + "_" +
                                                std::to_string(c.img_size);
}

}  // namespace lorq
