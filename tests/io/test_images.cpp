#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "lorq/common/error.h"
#include "lorq/io/images.h"

using namespace lorq;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::path(::testing::TempDir()) / name) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

cv::Mat gradient(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(x * 255 / w, y * 255 / h, (x + y) % 256);
  return m;
}

// PIL's antialiased resampling, written out: a separable filter whose support grows with the downscale factor.
at::Tensor reference_resize(const at::Tensor& img, int64_t out_h, int64_t out_w, bool cubic) {
  auto kernel = [cubic](double x) {
    x = std::abs(x);
    if (!cubic) return x < 1 ? 1 - x : 0.0;
    const double a = -0.5;
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
  };
  const double support = cubic ? 2.0 : 1.0;
  auto resample = [&](const at::Tensor& src, int64_t out, int dim) {  // src [C, H, W] double
    const int64_t in = src.size(dim);
    const double scale = double(in) / out, fscale = std::max(scale, 1.0);
    std::vector<int64_t> shape = src.sizes().vec();
    shape[dim] = out;
    at::Tensor dst = at::zeros(shape, at::kDouble);
    for (int64_t o = 0; o < out; ++o) {
      const double center = (o + 0.5) * scale;
      int64_t lo = std::max<int64_t>(0, static_cast<int64_t>(center - support * fscale + 0.5));
      int64_t hi = std::min<int64_t>(in, static_cast<int64_t>(center + support * fscale + 0.5));
      std::vector<double> w;
      double total = 0;
      for (int64_t i = lo; i < hi; ++i) {
        w.push_back(kernel((i - center + 0.5) / fscale));
        total += w.back();
      }
      at::Tensor acc = at::zeros_like(src.select(dim, 0));
      for (int64_t i = lo; i < hi; ++i) acc += src.select(dim, i) * (w[i - lo] / total);
      dst.select(dim, o).copy_(acc);
    }
    return dst;
  };
  at::Tensor x = img.permute({2, 0, 1}).to(at::kDouble);
  x = resample(x, out_w, 2);
  x = resample(x, out_h, 1);
  return x;
}

}  // namespace

TEST(Images, DecodeHandlesGrayAlphaAndReportsBadFiles) {
  TempDir dir("images_decode");
  cv::Mat gray(10, 12, CV_8UC1, cv::Scalar(77));
  cv::imwrite((dir.path / "gray.png").string(), gray);
  cv::Mat rgba(9, 7, CV_8UC4, cv::Scalar(10, 20, 30, 128));
  cv::imwrite((dir.path / "alpha.png").string(), rgba);
  cv::Mat bgr(5, 6, CV_8UC3, cv::Scalar(1, 2, 3));
  cv::imwrite((dir.path / "color.png").string(), bgr);

  at::Tensor g = decode_image((dir.path / "gray.png").string());
  EXPECT_EQ(g.sizes(), (std::vector<int64_t>{10, 12, 3}));
  EXPECT_EQ(g[3][4][2].item<uint8_t>(), 77);
  at::Tensor a = decode_image((dir.path / "alpha.png").string());
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{9, 7, 3}));
  EXPECT_EQ(a[0][0][0].item<uint8_t>(), 30);  // RGB order: BGR 10,20,30 -> R=30
  at::Tensor c = decode_image((dir.path / "color.png").string());
  EXPECT_EQ(c[0][0][0].item<uint8_t>(), 3);

  std::ofstream((dir.path / "broken.jpg").string()) << "not a jpeg";
  try {
    decode_image((dir.path / "broken.jpg").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken.jpg: cannot decode"), std::string::npos) << e.what();
  }
  EXPECT_THROW(decode_image((dir.path / "missing.png").string()), Error);
}

TEST(Images, EvalTransformMatchesAntialiasedReference) {
  // Odd sizes, both orientations, bicubic and bilinear, down- and up-scaling.
  struct Case {
    int h, w;
    const char* interp;
    double crop_pct;
    int out;
  };
  for (const Case& k : {Case{37, 53, "bicubic", 0.875, 24}, Case{61, 29, "bilinear", 0.9, 20},
                        Case{13, 17, "bicubic", 0.875, 21}}) {
    cv::Mat m = gradient(k.h, k.w);
    at::Tensor rgb = at::from_blob(m.data, {k.h, k.w, 3}, at::kByte).clone();
    Preprocessing pp;
    pp.interpolation = k.interp;
    pp.crop_pct = k.crop_pct;
    pp.input_height = pp.input_width = k.out;
    pp.mean = {0, 0, 0};
    pp.std = {1, 1, 1};
    at::Tensor got = eval_transform(rgb, pp) * 255;
    ASSERT_EQ(got.sizes(), (std::vector<int64_t>{3, k.out, k.out}));
    const int64_t scale = static_cast<int64_t>(std::floor(k.out / k.crop_pct));
    int64_t nh = k.h <= k.w ? scale : static_cast<int64_t>(scale * double(k.h) / k.w);
    int64_t nw = k.h <= k.w ? static_cast<int64_t>(scale * double(k.w) / k.h) : scale;
    at::Tensor ref = reference_resize(rgb, nh, nw, std::string(k.interp) == "bicubic").round().clamp(0, 255);
    const int64_t top = std::lround((nh - k.out) / 2.0), left = std::lround((nw - k.out) / 2.0);
    ref = ref.slice(1, top, top + k.out).slice(2, left, left + k.out);
    const double err = (got.to(at::kDouble) - ref).abs().max().item<double>();
    EXPECT_LE(err, 1.0 + 1e-3) << k.h << "x" << k.w << " " << k.interp;  // one 8-bit level of rounding
  }
}

TEST(Images, NormalizesWithMeanAndStd) {
  at::Tensor rgb = at::full({8, 8, 3}, 255, at::kByte);
  Preprocessing pp;
  pp.input_height = pp.input_width = 8;
  pp.crop_pct = 1.0;
  pp.mean = {0.5f, 0.25f, 0.0f};
  pp.std = {0.5f, 0.25f, 2.0f};
  at::Tensor x = eval_transform(rgb, pp);
  EXPECT_NEAR(x[0][0][0].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(x[1][0][0].item<float>(), 3.0, 1e-6);
  EXPECT_NEAR(x[2][0][0].item<float>(), 0.5, 1e-6);
}

TEST(Images, FlatFolderImageFolderAndCsv) {
  TempDir dir("images_sets");
  fs::create_directories(dir.path / "flat");
  cv::imwrite((dir.path / "flat" / "b.png").string(), gradient(8, 8));
  cv::imwrite((dir.path / "flat" / "a.jpg").string(), gradient(8, 8));
  std::ofstream((dir.path / "flat" / "notes.txt").string()) << "hello";
  ImageSet flat = open_image_folder((dir.path / "flat").string());
  ASSERT_EQ(flat.size(), 2u);
  EXPECT_EQ(fs::path(flat.items[0].path).filename(), "a.jpg");
  EXPECT_FALSE(flat.labeled());
  ASSERT_EQ(flat.skipped.size(), 1u);

  // ImageFolder: numeric folders, label names, and sorted order otherwise.
  for (const char* cls : {"3", "7"}) {
    fs::create_directories(dir.path / "numeric" / cls);
    cv::imwrite((dir.path / "numeric" / cls / "x.png").string(), gradient(8, 8));
  }
  ImageSet numeric = open_image_folder((dir.path / "numeric").string());
  ASSERT_EQ(numeric.size(), 2u);
  EXPECT_EQ(numeric.items[0].label, 3);
  EXPECT_EQ(numeric.items[1].label, 7);
  for (const char* cls : {"goldfish", "tench"}) {
    fs::create_directories(dir.path / "named" / cls);
    cv::imwrite((dir.path / "named" / cls / "x.png").string(), gradient(8, 8));
  }
  ImageSet named = open_image_folder((dir.path / "named").string(), {"tench", "goldfish"});
  EXPECT_EQ(named.items[0].label, 1);  // goldfish
  EXPECT_EQ(named.items[1].label, 0);  // tench
  EXPECT_TRUE(named.labeled());
  ImageSet sorted = open_image_folder((dir.path / "named").string());
  EXPECT_EQ(sorted.items[0].label, 0);

  // labels.csv with quoted fields, files found beside the csv or in images/.
  fs::create_directories(dir.path / "csv" / "images");
  cv::imwrite((dir.path / "csv" / "images" / "p.png").string(), gradient(8, 8));
  std::ofstream((dir.path / "csv" / "labels.csv").string())
      << "file,class_index,synset,class_name\np.png,5,n1,\"a, b\"\n";
  ImageSet csv = open_image_set((dir.path / "csv" / "images").string());
  ASSERT_EQ(csv.size(), 1u);
  EXPECT_EQ(csv.items[0].label, 5);

  std::ofstream((dir.path / "csv" / "bad.csv").string()) << "file,class_index\nmissing.png,1\n";
  try {
    open_labels_csv((dir.path / "csv" / "bad.csv").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.png"), std::string::npos);
  }
  std::ofstream((dir.path / "csv" / "bad2.csv").string()) << "file,class_index\np.png,cat\n";
  EXPECT_THROW(open_labels_csv((dir.path / "csv" / "bad2.csv").string()), Error);
  std::ofstream((dir.path / "csv" / "bad3.csv").string()) << "name,label_text\n";
  EXPECT_THROW(open_labels_csv((dir.path / "csv" / "bad3.csv").string()), Error);

  fs::create_directories(dir.path / "empty");
  try {
    open_image_folder((dir.path / "empty").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds no images"), std::string::npos);
  }
  EXPECT_THROW(open_image_folder((dir.path / "does-not-exist").string()), Error);
}

TEST(Images, BatchSkipsUnreadableImages) {
  TempDir dir("images_batch");
  for (int i = 0; i < 5; ++i) cv::imwrite((dir.path / ("img" + std::to_string(i) + ".png")).string(), gradient(20, 30));
  std::ofstream((dir.path / "img5.png").string()) << "truncated";
  ImageSet set = open_image_folder(dir.path.string());
  ASSERT_EQ(set.size(), 6u);
  Preprocessing pp;
  pp.input_height = pp.input_width = 16;
  for (int threads : {1, 3}) {
    ImageBatch b = load_batch(set, 0, 6, pp, threads);
    EXPECT_EQ(b.images.size(0), 5);
    ASSERT_EQ(b.failed.size(), 1u);
    EXPECT_NE(b.failed[0].find("img5.png"), std::string::npos);
    EXPECT_EQ(b.indices, (std::vector<size_t>{0, 1, 2, 3, 4}));
  }
}
