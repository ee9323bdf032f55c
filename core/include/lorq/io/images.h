#pragma once
// Image sets and timm's evaluation transform: decode (OpenCV), resize the short side to input/crop_pct with the
// config's interpolation (antialiased like PIL), center crop, normalize.
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "lorq/models/vit_config.h"

namespace lorq {

struct ImageItem {
  std::string path;
  int label = -1;  // -1: unlabeled
};

struct ImageSet {
  std::string source;                 // the folder or labels file it came from
  std::vector<ImageItem> items;       // in a stable (sorted) order
  std::vector<std::string> skipped;   // files that are not images (by name), listed in one warning
  bool labeled() const;
  size_t size() const { return items.size(); }
};

// A flat folder of images (unlabeled), or an ImageFolder tree (one sub-folder per class). A class folder maps
// to an index by: its number when numeric; its position in `label_names` when it equals a label name; else its
// position among the sorted folder names (torchvision's rule, exact for full ImageNet synset trees).
// Throws lorq::Error when the folder is missing or holds no images.
ImageSet open_image_folder(const std::string& dir, const std::vector<std::string>& label_names = {});
// A CSV with a header holding at least `file` and `class_index`; files are resolved against `images_dir`, or
// else the CSV's folder and its images/ sub-folder. Missing files are reported in one error.
ImageSet open_labels_csv(const std::string& csv, const std::string& images_dir = "");
// `labels` when given; else images/labels.csv or images/../labels.csv when present; else the folder itself.
ImageSet open_image_set(const std::string& images, const std::string& labels = "",
                        const std::vector<std::string>& label_names = {});

bool has_image_extension(const std::string& path);

// Decodes to 8-bit RGB (grayscale expanded, alpha dropped, EXIF orientation applied). Throws lorq::Error.
at::Tensor decode_image(const std::string& path);  // uint8 [H, W, 3]
// timm eval transform of a decoded uint8 [H, W, 3] image -> float [3, h, w].
at::Tensor eval_transform(const at::Tensor& rgb, const Preprocessing& pp);
at::Tensor load_image(const std::string& path, const Preprocessing& pp);

struct ImageBatch {
  at::Tensor images;                // [B, 3, h, w] (B = number decoded)
  std::vector<int> labels;          // one per decoded image
  std::vector<size_t> indices;      // positions in the set
  std::vector<std::string> failed;  // "path: problem" for images that could not be decoded
};
// Decodes items [begin, end) of the set, using up to `threads` threads.
ImageBatch load_batch(const ImageSet& set, size_t begin, size_t end, const Preprocessing& pp, int threads = 1);

}  // namespace lorq
