#include "lorq/io/annotations.h"

#include <ATen/ATen.h>

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <sstream>
#include <string>
#include <system_error>

#include "lorq/common/error.h"

namespace fs = std::filesystem;

namespace lorq {

namespace {

// A whole field as a double; false for anything else ("1.5x", "", ...). std::from_chars ignores the C locale, which
// a Qt application sets from the environment (a German locale would otherwise expect "0,5").
bool parse_number(const std::string& s, double* out) {
  const char* begin = s.data() + (!s.empty() && s[0] == '+' ? 1 : 0);  // from_chars takes no '+', strtod does
  const char* end = s.data() + s.size();
  if (begin == end || (*begin == '-' && begin != s.data())) return false;  // "+-1"
  const auto [ptr, ec] = std::from_chars(begin, end, *out);
  return ec == std::errc() && ptr == end;
}

// `path` with its last component named `from` replaced by `to`; false when there is none.
bool replace_last_folder(const fs::path& path, const std::string& from, const std::string& to, fs::path* out) {
  std::vector<fs::path> parts(path.begin(), path.end());
  if (parts.size() < 2) return false;
  for (size_t i = parts.size() - 1; i-- > 0;) {  // never the file name itself
    if (parts[i] != from) continue;
    fs::path result;
    for (size_t j = 0; j < parts.size(); ++j) result /= (j == i ? fs::path(to) : parts[j]);
    *out = result;
    return true;
  }
  return false;
}

std::string depth_name(int depth) {
  switch (depth) {
    case CV_8U:
      return "8-bit";
    case CV_8S:
      return "signed 8-bit";
    case CV_16U:
      return "16-bit";
    case CV_16S:
      return "signed 16-bit";
    case CV_32S:
      return "32-bit integer";
    case CV_32F:
      return "32-bit float";
    case CV_64F:
      return "64-bit float";
    default:
      return "depth " + std::to_string(depth);
  }
}

}  // namespace

std::vector<YoloBox> read_yolo_labels(const std::string& path, int num_classes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, fs::exists(path) ? "cannot read the label file" : "no such label file");
  std::vector<YoloBox> boxes;
  std::string line;
  int line_no = 0;
  static const char* names[5] = {"class", "cx", "cy", "w", "h"};
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream ss(line);
    std::vector<std::string> f;
    for (std::string tok; ss >> tok;) f.push_back(tok);
    if (f.empty()) continue;
    const std::string at = "line " + std::to_string(line_no) + ": ";
    if (f.size() != 5)
      throw Error(path, at + "expected 5 fields `class cx cy w h`, found " + std::to_string(f.size()) +
                            (f.size() > 5 && f.size() % 2 == 1 ? " (polygon segment labels are not supported)" : ""));
    double v[5];
    for (int k = 0; k < 5; ++k) {
      if (!parse_number(f[k], &v[k]) || !std::isfinite(v[k]))
        throw Error(path, at + names[k] + " '" + f[k] + "' is not a finite number");
    }
    if (v[0] < 0 || v[0] != std::floor(v[0]) || v[0] > 1e6)
      throw Error(path, at + "class '" + f[0] + "' is not a non-negative integer");
    YoloBox b;
    b.class_index = static_cast<int>(v[0]);
    if (num_classes > 0 && b.class_index >= num_classes)
      throw Error(path, at + "class " + f[0] + " is beyond the " + std::to_string(num_classes) + " classes");
    for (int k = 1; k < 5; ++k)
      if (v[k] < 0 || v[k] > 1)
        throw Error(path,
                    at + names[k] + " " + f[k] + " is outside 0..1 (YOLO boxes are normalised by the image size)");
    b.cx = v[1];
    b.cy = v[2];
    b.w = v[3];
    b.h = v[4];
    boxes.push_back(b);
  }
  if (in.bad()) throw Error(path, "read error");
  return boxes;
}

at::Tensor read_label_map(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw Error(path, "no such label map");
  const cv::Mat m = cv::imread(path, cv::IMREAD_UNCHANGED);
  if (m.empty()) throw Error(path, "cannot decode the label map (expected an 8-bit single-channel PNG)");
  if (m.depth() != CV_8U || m.channels() != 1)
    throw Error(path, "a label map must be 8-bit with one channel of class indices; this one is " +
                          depth_name(m.depth()) + " with " + std::to_string(m.channels()) +
                          " channels (a palette PNG decodes to colour: save the indices as 8-bit grayscale)");
  at::Tensor out = at::empty({m.rows, m.cols}, at::kByte);
  uint8_t* o = out.data_ptr<uint8_t>();
  for (int y = 0; y < m.rows; ++y) std::copy(m.ptr<uint8_t>(y), m.ptr<uint8_t>(y) + m.cols, o + int64_t{y} * m.cols);
  return out;
}

std::string yolo_label_path(const std::string& image_path) {
  fs::path p;
  if (!replace_last_folder(fs::path(image_path), "images", "labels", &p)) p = image_path;
  return p.replace_extension(".txt").string();
}

std::string segmentation_label_path(const std::string& image_path) {
  fs::path p;
  if (!replace_last_folder(fs::path(image_path), "images", "annotations", &p))
    throw Error(image_path,
                "is not inside an `images` folder, so its label map (`annotations/<name>.png`) "
                "cannot be found");
  return p.replace_extension(".png").string();
}

}  // namespace lorq
