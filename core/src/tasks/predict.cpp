#include "lorq/tasks/predict.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <cmath>
#include <filesystem>
#include <map>

#include "lorq/common/error.h"
#include "lorq/io/images.h"
#include "lorq/tasks/classification.h"
#include "lorq/tasks/detection.h"
#include "lorq/tasks/segmentation.h"

namespace lorq {

ImagePrediction predict_image(Model& model, const std::string& path, const PredictOptions& options) {
  c10::NoGradGuard no_grad;
  ImageGeometry g;
  const at::Tensor x = load_image(path, model.preprocessing(), &g).unsqueeze(0);
  const ModelOutputs y = model.forward(x);
  ImagePrediction p;
  p.task = model.task();
  p.image_width = static_cast<int>(g.image_w);
  p.image_height = static_cast<int>(g.image_h);
  switch (model.task()) {
    case TaskKind::Classification:
      p.top = top_k(y.logits()[0], options.top_k, model);
      break;
    case TaskKind::Detection:
      p.detections = detections_of(y, 0, x.size(2), x.size(3), g, options.threshold, &model);
      break;
    case TaskKind::Segmentation:
      p.label_map = label_map_of(y, 0, x.size(2), x.size(3), g);
      break;
  }
  return p;
}

}  // namespace lorq

// ---- Output for scripts and for eyes

namespace lorq {

std::string prediction_json(const std::string& image, const ImagePrediction& p) {
  nlohmann::json j;
  j["image"] = image;
  switch (p.task) {
    case TaskKind::Classification: {
      nlohmann::json top = nlohmann::json::array();
      for (const Prediction& c : p.top)
        top.push_back({{"class_index", c.class_index}, {"label", c.label}, {"probability", c.probability}});
      j["top"] = top;
      break;
    }
    case TaskKind::Detection: {
      nlohmann::json dets = nlohmann::json::array();
      for (const Detection& d : p.detections)
        dets.push_back({{"class_index", d.class_index},
                        {"label", d.label},
                        {"score", d.score},
                        {"box", {d.x0, d.y0, d.x1, d.y1}}});
      j["detections"] = dets;
      break;
    }
    case TaskKind::Segmentation: {
      std::map<int, int64_t> counts;
      for (uint8_t c : p.label_map.classes) ++counts[c];
      nlohmann::json classes = nlohmann::json::object();
      for (const auto& [c, n] : counts) classes[std::to_string(c)] = n;
      j["width"] = p.label_map.width;
      j["height"] = p.label_map.height;
      j["classes"] = classes;
      break;
    }
  }
  return j.dump();
}

std::array<uint8_t, 3> class_color(int c) {
  if (c <= 0) return {60, 60, 60};
  // Well-separated hues first (the demo's six classes), then a golden-ratio walk around the hue circle.
  static const uint8_t base[][3] = {{230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200},
                                    {245, 130, 48}, {145, 30, 180}, {70, 240, 240}, {240, 50, 230}};
  if (c <= 8) return {base[c - 1][0], base[c - 1][1], base[c - 1][2]};
  const double h = std::fmod(c * 0.618033988749895, 1.0) * 6.0;
  const int i = static_cast<int>(h);
  const double f = h - i;
  const uint8_t v = 230, p = 60, q = static_cast<uint8_t>(230 - 170 * f), t = static_cast<uint8_t>(60 + 170 * f);
  switch (i % 6) {
    case 0: return {v, t, p};
    case 1: return {q, v, p};
    case 2: return {p, v, t};
    case 3: return {p, q, v};
    case 4: return {t, p, v};
    default: return {v, p, q};
  }
}

namespace {

void write_image_atomically(const cv::Mat& bgr, const std::string& out_path) {
  namespace fs = std::filesystem;
  const fs::path out(out_path);
  // The extension picks the encoder, so the temporary name keeps it.
  const std::string tmp = (out.parent_path() / (".tmp-" + out.filename().string())).string();
  bool ok = false;
  try {
    ok = cv::imwrite(tmp, bgr);
  } catch (const cv::Exception& e) {
    throw Error(out_path, std::string("cannot write the image (") + e.what() + ")");
  }
  if (!ok) throw Error(out_path, "cannot write the image (unknown extension or unwritable folder)");
  std::error_code ec;
  fs::rename(tmp, out, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(out_path, "cannot rename the written image into place");
  }
}

cv::Scalar bgr_of(int c) {
  const auto rgb = class_color(c);
  return cv::Scalar(rgb[2], rgb[1], rgb[0]);
}

}  // namespace

void write_label_map_png(const LabelMap& map, const std::string& out_path) {
  if (map.empty()) throw Error(out_path, "no label map to write");
  cv::Mat m(map.height, map.width, CV_8UC1, const_cast<uint8_t*>(map.classes.data()));
  write_image_atomically(m, out_path);
}

void draw_prediction(const std::string& image, const ImagePrediction& p, const std::string& out_path) {
  cv::Mat bgr = cv::imread(image, cv::IMREAD_COLOR);
  if (bgr.empty()) throw Error(image, "cannot decode the image");
  const int thick = std::max(1, std::min(bgr.cols, bgr.rows) / 300);
  const double font = std::max(0.4, std::min(bgr.cols, bgr.rows) / 900.0);
  switch (p.task) {
    case TaskKind::Classification:
      if (!p.top.empty()) {
        const std::string text = p.top[0].label + " " + std::to_string(static_cast<int>(100 * p.top[0].probability)) + "%";
        cv::putText(bgr, text, {4, static_cast<int>(20 * font + 4)}, cv::FONT_HERSHEY_SIMPLEX, font,
                    cv::Scalar(255, 255, 255), thick + 1);
      }
      break;
    case TaskKind::Detection:
      for (const Detection& d : p.detections) {
        const cv::Point a(static_cast<int>(std::lround(d.x0)), static_cast<int>(std::lround(d.y0)));
        const cv::Point b(static_cast<int>(std::lround(d.x1)), static_cast<int>(std::lround(d.y1)));
        cv::rectangle(bgr, a, b, bgr_of(d.class_index + 1), thick);
        const std::string text = d.label + " " + std::to_string(static_cast<int>(std::lround(100 * d.score))) + "%";
        cv::putText(bgr, text, {a.x + 2, std::max(a.y - 3, static_cast<int>(12 * font))}, cv::FONT_HERSHEY_SIMPLEX,
                    font, bgr_of(d.class_index + 1), thick);
      }
      break;
    case TaskKind::Segmentation: {
      const LabelMap& m = p.label_map;
      if (m.width != bgr.cols || m.height != bgr.rows) throw Error(image, "the label map does not match the image size");
      for (int y = 0; y < bgr.rows; ++y) {
        cv::Vec3b* row = bgr.ptr<cv::Vec3b>(y);
        for (int x = 0; x < bgr.cols; ++x) {
          const auto c = class_color(m.at(x, y));
          for (int k = 0; k < 3; ++k) row[x][k] = static_cast<uint8_t>((row[x][k] + c[2 - k]) / 2);  // 50 % blend
        }
      }
      break;
    }
  }
  write_image_atomically(bgr, out_path);
}

}  // namespace lorq
