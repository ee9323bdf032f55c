#pragma once
// How images are turned into a model's input: timm's evaluation transform (resize the short side to
// input/crop_pct, centre crop, normalise). Hugging Face image processors add their own fields when they land.
#include <array>
#include <string>

namespace lorq {

struct Preprocessing {
  int input_channels = 3;
  int input_height = 224;
  int input_width = 224;
  std::string interpolation = "bicubic";  // bicubic | bilinear | nearest
  double crop_pct = 0.875;
  std::string crop_mode = "center";
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
  // A Hugging Face image processor ("YolosImageProcessor"; empty: timm's transform above). With shortest_edge > 0
  // it resizes keeping the aspect ratio: short side to shortest_edge, long side at most longest_edge.
  std::string image_processor;
  int shortest_edge = 0;
  int longest_edge = 0;
};

}  // namespace lorq
