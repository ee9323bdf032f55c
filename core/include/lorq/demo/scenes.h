#pragma once
// The procedural multi-object scene set ("scenes"): 1-4 filled shapes of the six demo classes (shape_class_names())
// per image, of varied sizes, overlapping, on the textured backgrounds of the shapes set. It trains and evaluates the
// embedded demo detector and segmenter: each scene records every object's class, tight box and instance mask, and the
// semantic label map.
//
// Occlusion: objects are drawn in order, later ones on top. Masks, boxes and the label map describe the *visible*
// pixels. No instance is ever dropped: a placement that would leave an earlier object with less than 40% of its own
// pixels visible is redrawn (up to 16 tries; after that the scene keeps the objects it has), so every annotated
// object shows at least 40% of itself and its box is the tight box of what shows.
//
// Determinism: as the shapes set (integer geometry, splitmix64 stream keyed by (seed, index), OpenCV's integer
// rasteriser), so the same (seed, index, size) gives a bit-identical scene on any machine; a test pins a checksum.
#include <cstdint>
#include <opencv2/core.hpp>
#include <string>
#include <vector>

namespace lorq {

struct SceneObject {
  int class_index = 0;  // index into shape_class_names()
  cv::Rect box;         // tight box of the visible pixels (cv::boundingRect(mask)), in pixels
  cv::Mat mask;         // CV_8UC1, 255 on the object's visible pixels, 0 elsewhere
};

struct Scene {
  cv::Mat image;                     // CV_8UC3, BGR, size x size
  cv::Mat label_map;                 // CV_8UC1: 0 background, 1 + class_index on each object's visible pixels
  std::vector<SceneObject> objects;  // in drawing order (later ones occlude earlier ones); 1..4 of them
};

// Scene `index` (>= 0) of the set with this seed; size is the image side in pixels (32..1024).
// Throws lorq::Error on a bad index or size.
Scene generate_scene(uint64_t seed, int64_t index, int size = 128);

struct ScenesDatasetSpec {
  int64_t count = 200;
  uint64_t seed = 1;
  int size = 128;
};

// Writes scenes 0..count-1 as
//   <dir>/images/NNNNNN.png       the image (BGR PNG)
//   <dir>/labels/NNNNNN.txt       YOLO format: one "class cx cy w h" line per object, class = 0..5, the box
//                                 normalised by the image size (6 decimals), in drawing order
//   <dir>/annotations/NNNNNN.png  the 8-bit label map (0 background, 1..6 = class_index + 1)
//   <dir>/labels.csv              header "file,class_index,class_name,x0,y0,x1,y1", one row per object; the box in
//                                 pixel edges (x1 = x0 + width, exclusive), file relative to images/
// Every file is written under a temporary name and renamed into place. Creates the directories if needed.
// Throws lorq::Error on a bad spec or an I/O failure.
void write_scenes_dataset(const std::string& dir, const ScenesDatasetSpec& spec);

// The YOLO line of a box in an image of the given size ("class cx cy w h", 6 decimals).
std::string yolo_line(int class_index, const cv::Rect& box, int image_width, int image_height);

}  // namespace lorq
