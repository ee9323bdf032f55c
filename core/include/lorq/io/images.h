#pragma once
// Image sets with their ground truth (a class, boxes or a label map per image) and the models' input transforms:
// decode (OpenCV), then timm's evaluation transform (resize the short side to input/crop_pct with the config's
// interpolation, antialiased like PIL, center crop, normalize) or a Hugging Face image processor's (hf_resize.h).
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "lorq/models/preprocessing.h"
#include "lorq/types.h"

namespace lorq {

// One ground-truth object of a detection set. YOLO label files give boxes relative to the image (normalized), a
// labels.csv gives pixels; pixels() converts once the image size is known.
struct BoxTarget {
  int class_index = 0;
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // corners
  bool normalized = false;                // relative to the image's width/height
  BoxTarget pixels(int64_t image_w, int64_t image_h) const;
};

struct ImageItem {
  ImageItem() = default;
  ImageItem(std::string image_path, int class_index) : path(std::move(image_path)), label(class_index) {}
  std::string path;
  int label = -1;                 // classification: the class index; -1: unlabeled
  bool has_boxes = false;         // detection: the image has ground truth (possibly no objects)
  std::vector<BoxTarget> boxes;   // detection ground truth
  std::string label_map;          // segmentation: a PNG of class indices, at the image's size ("" = unlabeled)
  bool labeled() const { return label >= 0 || has_boxes || !label_map.empty(); }
};

struct ImageSet {
  std::string source;                 // the folder or labels file it came from
  std::vector<ImageItem> items;       // in a stable (sorted) order
  std::vector<std::string> skipped;   // files that are not images (by name), listed in one warning
  bool labeled() const;
  size_t size() const { return items.size(); }
};

// A flat folder of images (unlabeled unless the task finds annotations beside it, see open_image_set), or an
// ImageFolder tree (one sub-folder per class). A class folder maps
// to an index by: its number when numeric; its position in `label_names` when it equals a label name; else its
// position among the sorted folder names (torchvision's rule, exact for full ImageNet synset trees).
// Throws lorq::Error when the folder is missing or holds no images.
ImageSet open_image_folder(const std::string& dir, const std::vector<std::string>& label_names = {});
// A CSV with a header holding at least `file` and `class_index`; files are resolved against `images_dir`, or
// else the CSV's folder and its images/ sub-folder. Missing files are reported in one error. With `x0,y0,x1,y1`
// columns it is a detection set: one row per object (pixels), the rows of one file making that image's boxes.
ImageSet open_labels_csv(const std::string& csv, const std::string& images_dir = "");
// `labels` when given; else images/labels.csv or images/../labels.csv when present; else the folder itself.
// For a detection task, a folder with YOLO label files beside it (`.../images/x.jpg` -> `.../labels/x.txt`, the
// Ultralytics layout; an image without a file has no objects) is labeled from them; for a segmentation task, a
// folder with label maps beside it (`.../images/x.jpg` -> `.../annotations/x.png`, the ADE20K layout).
// YOLO class indices are contiguous; for a model whose label list has "N/A" placeholders (COCO's 91 ids) index k
// is the model's k-th real label, so COCO-80 label files evaluate a COCO-91 detector.
ImageSet open_image_set(const std::string& images, const std::string& labels = "",
                        const std::vector<std::string>& label_names = {},
                        TaskKind task = TaskKind::Classification);

bool has_image_extension(const std::string& path);

// Decodes to 8-bit RGB (grayscale expanded, alpha dropped, EXIF orientation applied). Throws lorq::Error.
at::Tensor decode_image(const std::string& path);  // uint8 [H, W, 3]
// timm eval transform of a decoded uint8 [H, W, 3] image -> float [3, h, w].
at::Tensor eval_transform(const at::Tensor& rgb, const Preprocessing& pp);

// Where an image's pixels went: its decoded size and the size of the resized image inside the model input (the
// input may be larger: a batch pads bottom/right). Outputs in input coordinates map back to the image with it.
struct ImageGeometry {
  int64_t image_h = 0, image_w = 0;  // the decoded image
  int64_t input_h = 0, input_w = 0;  // the resized image (before padding)
};
// The model's input transform (pp.resize) of a decoded uint8 [H, W, 3] image -> float [3, h, w].
at::Tensor preprocess(const at::Tensor& rgb, const Preprocessing& pp, ImageGeometry* geometry = nullptr);
at::Tensor load_image(const std::string& path, const Preprocessing& pp, ImageGeometry* geometry = nullptr);
// Stacks [C, h, w] images (or concatenates [B, C, h, w] batches), zero-padding bottom/right to the largest size, as
// the Hugging Face processors' do_pad does (after normalisation, so the padding is 0).
at::Tensor pad_and_stack(const std::vector<at::Tensor>& images);

struct ImageBatch {
  at::Tensor images;                   // [B, 3, h, w] (B = number decoded), padded to the largest
  std::vector<int> labels;             // one per decoded image
  std::vector<size_t> indices;         // positions in the set
  std::vector<ImageGeometry> geometry; // one per decoded image
  std::vector<std::string> failed;     // "path: problem" for images that could not be decoded
};
// Decodes items [begin, end) of the set, using up to `threads` threads.
ImageBatch load_batch(const ImageSet& set, size_t begin, size_t end, const Preprocessing& pp, int threads = 1);

}  // namespace lorq
