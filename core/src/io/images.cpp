#include "lorq/io/images.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <cstdlib>
#include <fstream>
#include <map>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <thread>

#include "lorq/common/error.h"
#include "lorq/io/annotations.h"
#include "lorq/io/hf_resize.h"

namespace fs = std::filesystem;

namespace lorq {

bool ImageSet::labeled() const {
  return !items.empty() && std::all_of(items.begin(), items.end(), [](const ImageItem& i) { return i.labeled(); });
}

BoxTarget BoxTarget::pixels(int64_t image_w, int64_t image_h) const {
  if (!normalized) return *this;
  BoxTarget b = *this;
  b.x0 = x0 * image_w;
  b.x1 = x1 * image_w;
  b.y0 = y0 * image_h;
  b.y1 = y1 * image_h;
  b.normalized = false;
  return b;
}

bool has_image_extension(const std::string& path) {
  std::string ext = fs::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* known[] = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"};
  return std::any_of(std::begin(known), std::end(known), [&](const char* k) { return ext == k; });
}

namespace {

std::vector<fs::path> sorted_entries(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) out.push_back(it->path());
  if (ec) throw Error(dir.string(), "cannot list the folder (" + ec.message() + ")");
  std::sort(out.begin(), out.end());
  return out;
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() < 9 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// Splits one CSV line, honouring double quotes ("a, b" stays one field).
std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool quoted = false;
  for (size_t i = 0; i < line.size(); ++i) {
    char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        cur += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        cur += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.push_back(cur);
      cur.clear();
    } else if (c != '\r') {
      cur += c;
    }
  }
  out.push_back(cur);
  return out;
}

}  // namespace

ImageSet open_image_folder(const std::string& dir, const std::vector<std::string>& label_names) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) throw Error(dir, "no such folder");
  if (!fs::is_directory(dir, ec)) throw Error(dir, "not a folder");
  ImageSet set;
  set.source = dir;
  std::vector<fs::path> subdirs;
  for (const fs::path& p : sorted_entries(dir)) {
    if (fs::is_directory(p, ec)) {
      subdirs.push_back(p);
    } else if (has_image_extension(p.string())) {
      set.items.push_back({p.string(), -1});
    } else if (p.filename() != "labels.csv") {
      set.skipped.push_back(p.string());
    }
  }
  if (set.items.empty() && !subdirs.empty()) {
    // ImageFolder layout: one sub-folder per class.
    std::map<std::string, int> by_label;
    for (size_t i = 0; i < label_names.size(); ++i) by_label.emplace(label_names[i], static_cast<int>(i));
    for (size_t c = 0; c < subdirs.size(); ++c) {
      const std::string name = subdirs[c].filename().string();
      int label = static_cast<int>(c);
      if (is_number(name)) {
        label = std::stoi(name);
      } else if (auto it = by_label.find(name); it != by_label.end()) {
        label = it->second;
      }
      for (const fs::path& p : sorted_entries(subdirs[c])) {
        if (fs::is_regular_file(p, ec) && has_image_extension(p.string())) {
          set.items.push_back({p.string(), label});
        } else {
          set.skipped.push_back(p.string());
        }
      }
    }
  }
  if (set.items.empty()) throw Error(dir, "the folder holds no images (jpg, png, bmp, webp, tiff)");
  return set;
}

ImageSet open_labels_csv(const std::string& csv, const std::string& images_dir) {
  std::ifstream in(csv);
  if (!in) throw Error(csv, "cannot open the labels file");
  std::string line;
  if (!std::getline(in, line)) throw Error(csv, "the labels file is empty");
  const std::vector<std::string> header = split_csv(line);
  int file_col = -1, label_col = -1;
  int box_col[4] = {-1, -1, -1, -1};
  static const char* box_names[4] = {"x0", "y0", "x1", "y1"};
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == "file" || header[i] == "filename" || header[i] == "path") file_col = static_cast<int>(i);
    if (header[i] == "class_index" || header[i] == "label") label_col = static_cast<int>(i);
    for (int k = 0; k < 4; ++k)
      if (header[i] == box_names[k]) box_col[k] = static_cast<int>(i);
  }
  const bool detection = box_col[0] >= 0 && box_col[1] >= 0 && box_col[2] >= 0 && box_col[3] >= 0;
  std::map<std::string, size_t> item_of_file;  // detection: the item collecting a file's boxes
  if (file_col < 0 || label_col < 0)
    throw Error(csv, "the header must name a 'file' and a 'class_index' column, got: " + line);

  const fs::path csv_dir = fs::path(csv).parent_path().empty() ? fs::path(".") : fs::path(csv).parent_path();
  std::vector<fs::path> roots;
  if (!images_dir.empty()) roots.push_back(images_dir);
  roots.push_back(csv_dir);
  roots.push_back(csv_dir / "images");

  ImageSet set;
  set.source = csv;
  std::vector<std::string> missing;
  int line_no = 1;
  std::error_code ec;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line == "\r") continue;
    const std::vector<std::string> f = split_csv(line);
    int needed = std::max(file_col, label_col);
    if (detection) needed = std::max({needed, box_col[0], box_col[1], box_col[2], box_col[3]});
    if (static_cast<int>(f.size()) <= needed)
      throw Error(csv, "line " + std::to_string(line_no) + " has too few fields");
    int label = 0;
    try {
      size_t used = 0;
      label = std::stoi(f[label_col], &used);
      if (used != f[label_col].size() || label < 0) throw std::invalid_argument("x");
    } catch (const std::exception&) {
      throw Error(csv, "line " + std::to_string(line_no) + ": class_index '" + f[label_col] +
                           "' is not a non-negative integer");
    }
    std::string found;
    for (const fs::path& r : roots) {
      fs::path p = r / f[file_col];
      if (fs::is_regular_file(p, ec)) {
        found = p.string();
        break;
      }
    }
    if (found.empty()) {
      missing.push_back(f[file_col]);
    } else if (!detection) {
      set.items.push_back({found, label});
    } else {
      BoxTarget box;
      box.class_index = label;
      double* corner[4] = {&box.x0, &box.y0, &box.x1, &box.y1};
      for (int k = 0; k < 4; ++k) {
        const std::string& v = f[box_col[k]];
        char* stop = nullptr;
        *corner[k] = std::strtod(v.c_str(), &stop);
        if (v.empty() || *stop != '\0' || !std::isfinite(*corner[k]))
          throw Error(csv, "line " + std::to_string(line_no) + ": " + box_names[k] + " '" + v + "' is not a number");
      }
      if (box.x1 < box.x0 || box.y1 < box.y0)
        throw Error(csv, "line " + std::to_string(line_no) + ": the box's x1/y1 are smaller than its x0/y0");
      auto [it, added] = item_of_file.emplace(found, set.items.size());
      if (added) {
        ImageItem item;
        item.path = found;
        item.has_boxes = true;
        set.items.push_back(item);
      }
      set.items[it->second].boxes.push_back(box);
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 5; ++i) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 5) list += ", ...";
    throw Error(csv, std::to_string(missing.size()) + " listed image(s) not found (" + list + ")");
  }
  if (set.items.empty()) throw Error(csv, "the labels file lists no images");
  return set;
}

namespace {

// YOLO class k -> the model's label index: the k-th label that is not an "N/A" placeholder.
std::vector<int> yolo_class_map(const std::vector<std::string>& label_names) {
  std::vector<int> map;
  for (size_t i = 0; i < label_names.size(); ++i)
    if (label_names[i] != "N/A") map.push_back(static_cast<int>(i));
  if (map.size() == label_names.size()) map.clear();  // no placeholders: the identity
  return map;
}

// YOLO label files beside the images (yolo_label_path): when at least one exists, every image is labeled, one
// without a file having no objects (the Ultralytics convention). Returns whether any existed.
bool attach_yolo_labels(ImageSet& set, const std::vector<std::string>& label_names) {
  const std::vector<int> map = yolo_class_map(label_names);
  std::error_code ec;
  std::vector<std::string> files(set.items.size());
  bool any = false;
  for (size_t i = 0; i < set.items.size(); ++i) {
    files[i] = yolo_label_path(set.items[i].path);
    if (fs::is_regular_file(files[i], ec)) any = true;
  }
  if (!any) return false;
  for (size_t i = 0; i < set.items.size(); ++i) {
    ImageItem& item = set.items[i];
    item.has_boxes = true;
    if (!fs::is_regular_file(files[i], ec)) continue;
    for (const YoloBox& y : read_yolo_labels(files[i])) {
      BoxTarget b;
      b.class_index = y.class_index;
      if (!map.empty()) {
        if (y.class_index >= static_cast<int>(map.size()))
          throw Error(files[i], "class " + std::to_string(y.class_index) + " is beyond the model's " +
                                    std::to_string(map.size()) + " classes");
        b.class_index = map[y.class_index];
      }
      b.x0 = y.cx - y.w / 2;
      b.x1 = y.cx + y.w / 2;
      b.y0 = y.cy - y.h / 2;
      b.y1 = y.cy + y.h / 2;
      b.normalized = true;
      item.boxes.push_back(b);
    }
  }
  return true;
}

// Label maps beside the images (segmentation_label_path); returns whether any existed.
bool attach_label_maps(ImageSet& set) {
  std::error_code ec;
  bool any = false;
  for (ImageItem& item : set.items) {
    try {
      const std::string png = segmentation_label_path(item.path);
      if (fs::is_regular_file(png, ec)) {
        item.label_map = png;
        any = true;
      }
    } catch (const Error&) {
      return false;  // no `images` folder in the path: no annotations layout
    }
  }
  return any;
}

}  // namespace

ImageSet open_image_set(const std::string& images, const std::string& labels,
                        const std::vector<std::string>& label_names, TaskKind task) {
  if (!labels.empty()) return open_labels_csv(labels, images);
  std::error_code ec;
  if (task == TaskKind::Detection || task == TaskKind::Segmentation) {
    // The annotation layouts need a plain folder of images (sub-folders are splits there, not classes).
    ImageSet set;
    try {
      set = open_image_folder(images, {});
    } catch (const Error&) {
      set = {};
    }
    if (!set.items.empty()) {
      for (ImageItem& item : set.items) item.label = -1;
      const bool found = task == TaskKind::Detection ? attach_yolo_labels(set, label_names) : attach_label_maps(set);
      if (found) return set;
    }
  }
  for (const fs::path& candidate : {fs::path(images) / "labels.csv", fs::path(images).parent_path() / "labels.csv"}) {
    if (!candidate.empty() && fs::is_regular_file(candidate, ec)) {
      // Only use a CSV beside the folder when it describes this folder's files.
      try {
        return open_labels_csv(candidate.string(), images);
      } catch (const Error&) {
        if (candidate.parent_path() == fs::path(images)) throw;
      }
    }
  }
  return open_image_folder(images, label_names);
}

at::Tensor decode_image(const std::string& path) {
  cv::Mat bgr;
  try {
    // IMREAD_COLOR: 8-bit, 3 channels (grayscale expanded, alpha dropped) with EXIF orientation applied.
    bgr = cv::imread(path, cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    throw Error(path, std::string("cannot decode the image (") + e.what() + ")");
  }
  if (bgr.empty()) throw Error(path, "cannot decode the image (not an image, truncated or unsupported format)");
  cv::Mat rgb;
  cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
  at::Tensor t = at::empty({rgb.rows, rgb.cols, 3}, at::kByte);
  for (int y = 0; y < rgb.rows; ++y) std::memcpy(t.data_ptr<uint8_t>() + size_t(y) * rgb.cols * 3, rgb.ptr(y), rgb.cols * 3);
  return t;
}

at::Tensor eval_transform(const at::Tensor& rgb, const Preprocessing& pp) {
  const int64_t h = rgb.size(0), w = rgb.size(1);
  const int64_t crop_h = pp.input_height, crop_w = pp.input_width;
  // torchvision Resize(int): the short side becomes `scale`, the long side is scaled and truncated.
  const int64_t scale = static_cast<int64_t>(std::floor(std::max(crop_h, crop_w) / pp.crop_pct));
  int64_t new_h, new_w;
  if (h <= w) {
    new_h = scale;
    new_w = static_cast<int64_t>(scale * static_cast<double>(w) / h);
  } else {
    new_w = scale;
    new_h = static_cast<int64_t>(scale * static_cast<double>(h) / w);
  }
  at::Tensor x = rgb.permute({2, 0, 1}).unsqueeze(0).to(at::kFloat);
  if (new_h != h || new_w != w) {
    if (pp.interpolation == "bicubic") {
      x = at::_upsample_bicubic2d_aa(x, {new_h, new_w}, /*align_corners=*/false);
    } else if (pp.interpolation == "bilinear") {
      x = at::_upsample_bilinear2d_aa(x, {new_h, new_w}, /*align_corners=*/false);
    } else {
      x = at::upsample_nearest2d(x, {new_h, new_w});
    }
    // PIL resizes 8-bit images and stores 8-bit results: round and clamp the same way.
    x = x.round().clamp(0, 255);
  }
  // Center crop (torchvision rounds the offsets); pad with zeros when the image is smaller than the crop.
  if (new_h < crop_h || new_w < crop_w) {
    const int64_t ph = std::max<int64_t>(0, crop_h - new_h), pw = std::max<int64_t>(0, crop_w - new_w);
    x = at::constant_pad_nd(x, {pw / 2, (pw + 1) / 2, ph / 2, (ph + 1) / 2}, 0);
    new_h = x.size(2);
    new_w = x.size(3);
  }
  const int64_t top = static_cast<int64_t>(std::lround((new_h - crop_h) / 2.0));
  const int64_t left = static_cast<int64_t>(std::lround((new_w - crop_w) / 2.0));
  x = x.slice(2, top, top + crop_h).slice(3, left, left + crop_w).squeeze(0);
  at::Tensor mean = at::tensor(std::vector<float>(pp.mean.begin(), pp.mean.end())).view({3, 1, 1});
  at::Tensor stdv = at::tensor(std::vector<float>(pp.std.begin(), pp.std.end())).view({3, 1, 1});
  return ((x / 255.0f - mean) / stdv).contiguous();
}

at::Tensor preprocess(const at::Tensor& rgb, const Preprocessing& pp, ImageGeometry* geometry) {
  const int64_t h = rgb.size(0), w = rgb.size(1);
  int64_t out_h = pp.input_height, out_w = pp.input_width;
  at::Tensor x;
  switch (pp.resize) {
    case ResizeMode::TimmCenterCrop:
      x = eval_transform(rgb, pp);
      break;
    case ResizeMode::HfShortestLongest: {
      const auto size = yolos_resize_size(h, w, pp.shortest_edge, pp.longest_edge, pp.size_multiple);
      out_h = size.first;
      out_w = size.second;
      x = hf_normalize(hf_resize_bilinear(rgb, out_h, out_w), pp.mean, pp.std);
      break;
    }
    case ResizeMode::HfFixedSize:
      x = hf_normalize(hf_resize_bilinear(rgb, out_h, out_w), pp.mean, pp.std);
      break;
  }
  if (geometry) *geometry = {h, w, out_h, out_w};
  return x;
}

at::Tensor load_image(const std::string& path, const Preprocessing& pp, ImageGeometry* geometry) {
  return preprocess(decode_image(path), pp, geometry);
}

at::Tensor pad_and_stack(const std::vector<at::Tensor>& images) {
  if (images.empty()) throw Error("pad_and_stack: no images");
  int64_t H = 0, W = 0;
  for (const at::Tensor& t : images) {
    H = std::max(H, t.size(-2));
    W = std::max(W, t.size(-1));
  }
  std::vector<at::Tensor> padded;
  for (const at::Tensor& t : images) {
    at::Tensor p = (t.size(-2) == H && t.size(-1) == W) ? t : at::constant_pad_nd(t, {0, W - t.size(-1), 0, H - t.size(-2)}, 0);
    padded.push_back(p.dim() == 3 ? p.unsqueeze(0) : p);
  }
  return at::cat(padded);
}

ImageBatch load_batch(const ImageSet& set, size_t begin, size_t end, const Preprocessing& pp, int threads) {
  end = std::min(end, set.items.size());
  const size_t n = end > begin ? end - begin : 0;
  std::vector<at::Tensor> images(n);
  std::vector<ImageGeometry> geometry(n);
  std::vector<std::string> errors(n);
  auto work = [&](size_t first, size_t step) {
    for (size_t i = first; i < n; i += step) {
      try {
        images[i] = load_image(set.items[begin + i].path, pp, &geometry[i]);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  };
  threads = std::max(1, std::min<int>(threads, static_cast<int>(n)));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(work, t, threads);
  work(0, threads);
  for (auto& t : pool) t.join();

  ImageBatch batch;
  std::vector<at::Tensor> ok;
  for (size_t i = 0; i < n; ++i) {
    if (images[i].defined()) {
      ok.push_back(images[i]);
      batch.labels.push_back(set.items[begin + i].label);
      batch.indices.push_back(begin + i);
      batch.geometry.push_back(geometry[i]);
    } else {
      batch.failed.push_back(errors[i]);
    }
  }
  batch.images = ok.empty() ? at::empty({0, 3, pp.input_height, pp.input_width}) : pad_and_stack(ok);
  return batch;
}

}  // namespace lorq
