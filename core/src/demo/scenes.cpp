#include "lorq/demo/scenes.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>
#include <system_error>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/demo/shapes_dataset.h"
#include "shape_raster.h"

namespace lorq {

namespace {

namespace fs = std::filesystem;
using namespace shape_raster;  // NOLINT: the shared drawing primitives

// Keys the scene stream apart from the shapes set's, so scene seed 1 and shapes seed 1 are unrelated.
constexpr uint64_t kSceneStream = 0x5343454E45530000ULL;  // "SCENES"
constexpr int kMaxObjects = 4;
constexpr int kPlacementTries = 16;
// An earlier object must keep at least this share (in percent) of its own pixels visible.
constexpr int64_t kMinVisiblePercent = 40;

void check_size(int size) {
  if (size < 32 || size > 1024) throw Error("scenes", "image size must be 32..1024, got " + std::to_string(size));
}

struct Placed {
  int class_index;
  ShapeRaster raster;
  int64_t area;  // pixels of its own mask, before any occlusion
};

// True when adding `mask` on top leaves every earlier object with enough of itself visible. `covered` is the
// union of the masks drawn after object j, per j (updated by the caller when the placement is kept).
bool occlusion_acceptable(const std::vector<Placed>& placed, const std::vector<cv::Mat>& covered, const cv::Mat& mask) {
  for (size_t j = 0; j < placed.size(); ++j) {
    cv::Mat hidden = covered[j] | mask;
    cv::Mat visible;
    cv::bitwise_and(placed[j].raster.mask, ~hidden, visible);
    if (int64_t{cv::countNonZero(visible)} * 100 < placed[j].area * kMinVisiblePercent) return false;
  }
  return true;
}

// An object colour that contrasts with the background under it (as in the shapes set) and with every earlier
// object it overlaps or touches, so that neighbouring objects never merge into one blob.
Bgr scene_object_colour(const Bgr& bg_mean, const std::vector<Bgr>& neighbours, Rng& rng) {
  const int bg_luma = luma(bg_mean);
  for (int attempt = 0; attempt < 256; ++attempt) {
    const Bgr c = random_colour(rng);
    auto distance = [&](const Bgr& o) { return std::abs(c[0] - o[0]) + std::abs(c[1] - o[1]) + std::abs(c[2] - o[2]); };
    bool ok = std::abs(luma(c) - bg_luma) >= 64 && distance(bg_mean) >= 160;
    for (const Bgr& n : neighbours) ok = ok && distance(n) >= 160 && std::abs(luma(c) - luma(n)) >= 40;
    if (ok) return c;
  }
  return object_colour(bg_mean, rng);
}

std::string numbered(int64_t i, int digits, const std::string& ext) {
  std::string name = std::to_string(i);
  return std::string(static_cast<size_t>(std::max<int>(0, digits - static_cast<int>(name.size()))), '0') + name + ext;
}

void write_png_atomically(const fs::path& path, const cv::Mat& image) {
  std::vector<uchar> bytes;
  bool ok = false;
  try {
    ok = cv::imencode(".png", image, bytes);
  } catch (const cv::Exception& e) {
    throw Error(path.string(), std::string("cannot encode the image: ") + e.what());
  }
  if (!ok) throw Error(path.string(), "cannot encode the image");
  // write_text_atomically writes the bytes as they are (binary stream), then renames.
  write_text_atomically(path.string(), std::string(bytes.begin(), bytes.end()));
}

}  // namespace

Scene generate_scene(uint64_t seed, int64_t index, int size) {
  check_size(size);
  if (index < 0) throw Error("scenes", "scene index must be >= 0, got " + std::to_string(index));
  Rng rng(seed ^ kSceneStream, index);

  // Geometry first: classes, sizes and positions, each object fully inside the image with a 1 px margin.
  // Circumscribed radius 8%..22% of the side (16%..44% across).
  const int64_t count = rng.range(1, kMaxObjects);
  std::vector<Placed> placed;
  std::vector<cv::Mat> covered;  // covered[j]: union of the masks placed after object j
  for (int64_t k = 0; k < count; ++k) {
    const int cls = static_cast<int>(rng.range(0, kNumClasses - 1));
    bool kept = false;
    for (int attempt = 0; attempt < kPlacementTries && !kept; ++attempt) {
      Placement at;
      at.rx = at.ry = rng.range(size * kOne * 8 / 100, size * kOne * 22 / 100);
      at.cx = rng.range(at.rx + kOne, (size - 2) * kOne - at.rx);
      at.cy = rng.range(at.rx + kOne, (size - 2) * kOne - at.rx);
      at.rot = Rotation::random(rng);
      ShapeRaster raster = rasterise(make_shape(cls, at, rng), size);
      const int64_t area = cv::countNonZero(raster.mask);
      if (area == 0 || !occlusion_acceptable(placed, covered, raster.mask)) continue;
      for (cv::Mat& c : covered) c |= raster.mask;
      covered.push_back(cv::Mat::zeros(size, size, CV_8UC1));
      placed.push_back({cls, std::move(raster), area});
      kept = true;
    }
    if (!kept) break;  // crowded: the scene keeps the objects it has (the first always fits)
  }

  // Then the background, and the objects composited on it in order, each coloured against what it covers.
  Scene scene;
  scene.image = textured_background(rng, size);
  const cv::Mat background = scene.image.clone();
  std::vector<Bgr> colours;
  const cv::Mat touch_kernel = cv::getStructuringElement(cv::MORPH_RECT, cv::Size(3, 3));
  for (size_t k = 0; k < placed.size(); ++k) {
    cv::Mat grown;
    cv::dilate(placed[k].raster.mask, grown, touch_kernel);
    std::vector<Bgr> neighbours;
    for (size_t j = 0; j < k; ++j) {
      if (cv::countNonZero(grown & placed[j].raster.mask) > 0) neighbours.push_back(colours[j]);
    }
    colours.push_back(scene_object_colour(mean_under(background, placed[k].raster.mask), neighbours, rng));
    composite(scene.image, placed[k].raster.alpha, colours.back());
  }
  add_noise(scene.image, rng);

  // Annotations: later objects overwrite earlier ones, so each pixel names the object on top.
  cv::Mat instance_map = cv::Mat::zeros(size, size, CV_8UC1);
  scene.label_map = cv::Mat::zeros(size, size, CV_8UC1);
  for (size_t k = 0; k < placed.size(); ++k) {
    instance_map.setTo(cv::Scalar(static_cast<double>(k + 1)), placed[k].raster.mask);
    scene.label_map.setTo(cv::Scalar(placed[k].class_index + 1), placed[k].raster.mask);
  }
  for (size_t k = 0; k < placed.size(); ++k) {
    SceneObject o;
    o.class_index = placed[k].class_index;
    o.mask = instance_map == static_cast<double>(k + 1);
    o.box = cv::boundingRect(o.mask);
    scene.objects.push_back(std::move(o));
  }
  return scene;
}

std::string yolo_line(int class_index, const cv::Rect& box, int image_width, int image_height) {
  char line[128];
  std::snprintf(line, sizeof line, "%d %.6f %.6f %.6f %.6f", class_index, (box.x + box.width / 2.0) / image_width,
                (box.y + box.height / 2.0) / image_height, static_cast<double>(box.width) / image_width,
                static_cast<double>(box.height) / image_height);
  return line;
}

void write_scenes_dataset(const std::string& dir, const ScenesDatasetSpec& spec) {
  if (spec.count < 1) throw Error(dir, "scenes dataset count must be >= 1, got " + std::to_string(spec.count));
  check_size(spec.size);

  const fs::path root(dir), images = root / "images", labels = root / "labels", annotations = root / "annotations";
  std::error_code ec;
  for (const fs::path& p : {root, images, labels, annotations}) {
    fs::create_directories(p, ec);
    if (ec) throw Error(p.string(), "cannot create directory: " + ec.message());
  }
  int digits = 1;
  for (int64_t v = spec.count - 1; v >= 10; v /= 10) ++digits;
  digits = std::max(digits, 6);

  const auto& names = shape_class_names();
  std::ostringstream csv;
  csv << "file,class_index,class_name,x0,y0,x1,y1\n";
  for (int64_t i = 0; i < spec.count; ++i) {
    const Scene s = generate_scene(spec.seed, i, spec.size);
    const std::string image_name = numbered(i, digits, ".png");
    std::string yolo;
    for (const SceneObject& o : s.objects) {
      yolo += yolo_line(o.class_index, o.box, s.image.cols, s.image.rows) + "\n";
      csv << image_name << ',' << o.class_index << ',' << names[static_cast<size_t>(o.class_index)] << ',' << o.box.x
          << ',' << o.box.y << ',' << o.box.x + o.box.width << ',' << o.box.y + o.box.height << '\n';
    }
    write_png_atomically(images / image_name, s.image);
    write_png_atomically(annotations / image_name, s.label_map);
    write_text_atomically((labels / numbered(i, digits, ".txt")).string(), yolo);
  }
  write_text_atomically((root / "labels.csv").string(), csv.str());
}

}  // namespace lorq
