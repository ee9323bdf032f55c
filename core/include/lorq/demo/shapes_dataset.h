#pragma once
// The procedural demo image set ("shapes"): small images of one filled shape (circle, square, triangle, star, cross,
// ring) on a textured background, generated from a fixed seed by the engine itself. It trains the tiny ViT classifier
// that ships with the product and serves as the embedded demo; masks and boxes are recorded for later
// detection/segmentation demos.
//
// Determinism: every number comes from a splitmix64 stream keyed by (seed, index) and all geometry is integer
// (fixed-point vertices, rational rotations, integer compositing), rasterised only by OpenCV's integer fillPoly and
// 1-px line code, so the same (seed, index, size) gives a bit-identical sample on any machine and compiler (a test
// pins a checksum; a change to OpenCV's rasteriser would show up there).
#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace lorq {

// The 6 class names in class-index order: "circle", "square", "triangle", "star", "cross", "ring".
const std::vector<std::string>& shape_class_names();

struct ShapeSample {
  cv::Mat image;    // CV_8UC3, BGR, size x size
  cv::Mat mask;     // CV_8UC1, 255 on the object, 0 elsewhere (a ring's hole is 0)
  int class_index;  // index into shape_class_names(); always index % 6
  cv::Rect box;     // tight bounding box of the mask (cv::boundingRect(mask))
};

// Sample `index` (>= 0) of the set with this seed; size is the image side in pixels (16..1024).
// Throws lorq::Error on a bad index or size.
ShapeSample generate_shape_sample(uint64_t seed, int64_t index, int size = 64);

struct ShapesDatasetSpec {
  int64_t count = 600;
  uint64_t seed = 1;
  int size = 64;
};

// Writes samples 0..count-1 as <dir>/images/NNNNNN.png (BGR) and <dir>/masks/NNNNNN.png (8-bit gray, same name), and
// <dir>/labels.csv with the header "file,class_index,class_name,box_x,box_y,box_w,box_h" (file relative to images/),
// one row per sample in index order. Creates the directories if needed; labels.csv is written to a temporary file
// and renamed into place, so readers never see a partial one. Throws lorq::Error on a bad spec or an I/O failure.
void write_shapes_dataset(const std::string& dir, const ShapesDatasetSpec& spec);

}  // namespace lorq
