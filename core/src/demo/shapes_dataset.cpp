#include "lorq/demo/shapes_dataset.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <system_error>

#include "lorq/common/error.h"
#include "shape_raster.h"

namespace lorq {

namespace {

namespace fs = std::filesystem;

using namespace shape_raster;  // NOLINT: the shared drawing primitives

void check_size(int size) {
  if (size < 16 || size > 1024) throw Error("shapes", "image size must be 16..1024, got " + std::to_string(size));
}

}  // namespace

const std::vector<std::string>& shape_class_names() {
  static const std::vector<std::string> names = {"circle", "square", "triangle", "star", "cross", "ring"};
  return names;
}

ShapeSample generate_shape_sample(uint64_t seed, int64_t index, int size) {
  check_size(size);
  if (index < 0) throw Error("shapes", "sample index must be >= 0, got " + std::to_string(index));
  Rng rng(seed, index);
  ShapeSample s;
  s.class_index = static_cast<int>(index % kNumClasses);

  // Geometry: circumscribed radius 17.5%..37.5% of the side (so 35%..75% across), fully inside with a 1 px margin.
  Placement at;
  at.rx = at.ry = rng.range(size * kOne * 35 / 200, size * kOne * 75 / 200);
  at.cx = rng.range(at.rx + kOne, (size - 2) * kOne - at.rx);
  at.cy = rng.range(at.rx + kOne, (size - 2) * kOne - at.rx);
  at.rot = Rotation::random(rng);
  const ShapeGeometry geom = make_shape(s.class_index, at, rng);

  // The mask (solid) and the coverage used to composite the image (antialiased), from the same vertices.
  ShapeRaster raster = rasterise(geom, size);
  s.mask = raster.mask;
  s.box = cv::boundingRect(s.mask);

  // Background: gradient, low-contrast texture, sometimes a thin distractor line (not part of the object).
  s.image = textured_background(rng, size);
  // Object colour against the background it covers; composite by coverage, then sensor-like noise over everything.
  const Bgr colour = object_colour(mean_under(s.image, s.mask), rng);
  composite(s.image, raster.alpha, colour);
  add_noise(s.image, rng);
  return s;
}

void write_shapes_dataset(const std::string& dir, const ShapesDatasetSpec& spec) {
  if (spec.count < 1) throw Error(dir, "shapes dataset count must be >= 1, got " + std::to_string(spec.count));
  check_size(spec.size);

  const fs::path root(dir), images = root / "images", masks = root / "masks";
  std::error_code ec;
  for (const fs::path& p : {root, images, masks}) {
    fs::create_directories(p, ec);
    if (ec) throw Error(p.string(), "cannot create directory: " + ec.message());
  }

  int digits = 1;
  for (int64_t v = spec.count - 1; v >= 10; v /= 10) ++digits;
  digits = std::max(digits, 6);

  const fs::path labels = root / "labels.csv", temp = root / "labels.csv.tmp";
  std::ofstream csv(temp, std::ios::binary | std::ios::trunc);
  if (!csv) throw Error(temp.string(), "cannot open for writing");
  csv << "file,class_index,class_name,box_x,box_y,box_w,box_h\n";

  const auto& names = shape_class_names();
  for (int64_t i = 0; i < spec.count; ++i) {
    const ShapeSample s = generate_shape_sample(spec.seed, i, spec.size);
    std::string name = std::to_string(i);
    name =
        std::string(static_cast<size_t>(std::max<int>(0, digits - static_cast<int>(name.size()))), '0') + name + ".png";
    const fs::path image_path = images / name, mask_path = masks / name;
    bool ok = false;
    try {
      ok = cv::imwrite(image_path.string(), s.image) && cv::imwrite(mask_path.string(), s.mask);
    } catch (const cv::Exception& e) {
      throw Error(image_path.string(), std::string("cannot write image: ") + e.what());
    }
    if (!ok) throw Error(image_path.string(), "cannot write image");
    csv << name << ',' << s.class_index << ',' << names[static_cast<size_t>(s.class_index)] << ',' << s.box.x << ','
        << s.box.y << ',' << s.box.width << ',' << s.box.height << '\n';
  }
  csv.close();
  if (!csv) {
    fs::remove(temp, ec);
    throw Error(temp.string(), "cannot write labels");
  }
  fs::rename(temp, labels, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(temp, ignored);
    throw Error(labels.string(), "cannot replace labels file: " + ec.message());
  }
}

}  // namespace lorq
