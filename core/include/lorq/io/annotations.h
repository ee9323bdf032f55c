#pragma once
// Ground-truth files of detection and segmentation sets, read strictly: any problem is a lorq::Error naming the file
// (and the line) and what is wrong, never a silently skipped object.
//  - YOLO label files (Ultralytics layout, e.g. ../shared/datasets/coco8): one `class cx cy w h` line per object,
//    the box normalised by the image's width and height; an empty file (or a missing one, by the Ultralytics
//    convention the caller applies) means no objects.
//  - Label maps: 8-bit single-channel PNGs of class indices (ADE20K/Cityscapes style, 255 usually "ignore").
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace lorq {

struct YoloBox {
  int class_index = 0;
  double cx = 0, cy = 0, w = 0, h = 0;  // normalised to 0..1
};

// Blank lines (and a trailing '\r') are skipped. Rejected, with the line number: a field count other than 5 (this
// includes Ultralytics' polygon "segment" lines), a class that is not a non-negative integer (or, when
// num_classes > 0, not below num_classes), a coordinate that is not a finite number in [0, 1]. Zero-sized boxes are
// accepted, as Ultralytics accepts them. Numbers are parsed independently of the C locale.
std::vector<YoloBox> read_yolo_labels(const std::string& path, int num_classes = 0);

// A label map, uint8 [H, W]. The file must decode (OpenCV, IMREAD_UNCHANGED) to one 8-bit channel: a colour, palette
// (OpenCV expands palettes to colour), 16-bit or alpha image is an error that says what was found.
at::Tensor read_label_map(const std::string& path);

// The Ultralytics layout: the last `images` folder of the path becomes `labels` and the extension `.txt`
// (`.../images/val/x.jpg` -> `.../labels/val/x.txt`); a path without an `images` folder gives the `.txt` beside the
// image, as Ultralytics' img2label_paths does.
std::string yolo_label_path(const std::string& image_path);
// The ADE20K layout: the last `images` folder becomes `annotations` and the extension `.png`
// (`.../images/training/x.jpg` -> `.../annotations/training/x.png`). Throws lorq::Error when the path has no
// `images` folder (a `.png` beside the image could be taken for an image).
std::string segmentation_label_path(const std::string& image_path);

}  // namespace lorq
