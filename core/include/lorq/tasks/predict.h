#pragma once
// One image through a model, whatever its task: what `lorq predict` prints and the workbench shows.
#include <array>
#include <cstdint>
#include <string>

#include "lorq/models/model.h"
#include "lorq/types.h"

namespace lorq {

struct PredictOptions {
  int top_k = 5;           // classification
  double threshold = 0.5;  // detection: Hugging Face's default; 0 keeps every detection token
};

// Decodes, preprocesses and runs the image (batch of one). Throws lorq::Error naming the file.
ImagePrediction predict_image(Model& model, const std::string& path, const PredictOptions& options = {});

// One line of `lorq predict --json`: {"image": PATH, "top": [{"class_index", "label", "probability"}]} for a
// classifier, {"image": PATH, "detections": [{"class_index", "label", "score", "box": [x0, y0, x1, y1]}]} for a
// detector (original pixels), {"image": PATH, "width", "height", "classes": {"<index>": pixels}} for a segmenter.
std::string prediction_json(const std::string& image, const ImagePrediction& prediction);

// The image with the prediction drawn on it: boxes with class names and scores, or the label map blended over the
// image (class colours of class_color), or the top-1 class as a caption. Written as PNG/JPEG by extension, through a
// temporary file. Throws lorq::Error naming the file.
void draw_prediction(const std::string& image, const ImagePrediction& prediction, const std::string& out_path);
// Writes a segmenter's label map as an 8-bit PNG of class indices (original image size), through a temporary file.
void write_label_map_png(const LabelMap& map, const std::string& out_path);
// A distinct colour per class (index 0 is dark grey: usually background), as 8-bit R, G, B.
std::array<uint8_t, 3> class_color(int class_index);

}  // namespace lorq
