#pragma once
// How images are turned into a model's input. Three recipes:
//  - timm's evaluation transform (resize the short side to input/crop_pct, centre crop, normalise);
//  - a Hugging Face image processor resizing to a fixed size (SegFormer: 512x512, aspect ratio not kept);
//  - a Hugging Face image processor resizing the shortest edge with a cap on the longest one, both sides floored
//    to a multiple (YOLOS/DETR: 800/1333, multiple 16), so every image keeps its own input size.
// Both Hugging Face recipes resize the uint8 image exactly as the processors' default (torchvision) backend does.
#include <array>
#include <string>

namespace lorq {

enum class ResizeMode {
  TimmCenterCrop,     // input_height x input_width crop of the resized image
  HfFixedSize,        // resized to input_height x input_width
  HfShortestLongest,  // shortest edge -> shortest_edge, longest capped at longest_edge, floored to size_multiple
};

struct Preprocessing {
  ResizeMode resize = ResizeMode::TimmCenterCrop;
  // HfShortestLongest only. input_height/input_width then hold the nominal size (what a square image becomes).
  int shortest_edge = 800;
  int longest_edge = 1333;
  int size_multiple = 16;
  // Whether images of one input size only ever share a batch (HfShortestLongest: a padded batch would change the
  // outputs, since the encoder attends to the padding).
  bool variable_size() const { return resize == ResizeMode::HfShortestLongest; }

  int input_channels = 3;
  int input_height = 224;
  int input_width = 224;
  std::string interpolation = "bicubic";  // bicubic | bilinear | nearest
  double crop_pct = 0.875;
  std::string crop_mode = "center";
  std::array<float, 3> mean{0.485f, 0.456f, 0.406f};
  std::array<float, 3> std{0.229f, 0.224f, 0.225f};
};

}  // namespace lorq
