#pragma once
// Shared by the ONNX export tests: runs an exported ONNX model in ONNX Runtime (onnxruntime-node, through
// tests/io/run_onnx.js) and compares its logits with the product's own forward pass of the same export.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace lorq::testdata {

// Where scripts/setup (or `npm install --ignore-scripts onnxruntime-node@1.30.0` in build/ort) puts the runtime.
inline std::string ort_module_dir() { return std::string(LORQ_ORT_DIR) + "/node_modules/onnxruntime-node"; }

struct OrtComparison {
  double max_abs_diff_disabled = 0, max_abs_diff_all = 0, max_abs_logit = 0;
  int top1_agree_disabled = 0, top1_agree_all = 0, images = 0;
  int correct_lorq = 0, correct_ort_all = 0, labeled = 0;
};

inline std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

// images [B, C, H, W] float32; lorq_logits [B, K] from the product; labels (-1: none) per image.
inline OrtComparison compare_with_ort(const std::string& onnx_path, const at::Tensor& images,
                                      const at::Tensor& lorq_logits, const std::vector<int>& labels,
                                      const std::string& work_dir) {
  OrtComparison r;
  const at::Tensor x = images.contiguous();
  const std::string input = work_dir + "/input.f32", prefix = work_dir + "/ort";
  {
    std::ofstream out(input, std::ios::binary);
    out.write(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
  }
  const std::string cmd = "node " + std::string(LORQ_SOURCE_DIR) + "/tests/io/run_onnx.js " + ort_module_dir() + " " +
                          onnx_path + " " + input + " " + std::to_string(x.size(0)) + " " + std::to_string(x.size(1)) +
                          " " + std::to_string(x.size(2)) + " " + std::to_string(x.size(3)) + " " + prefix;
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const int64_t B = lorq_logits.size(0), K = lorq_logits.size(1);
  const at::Tensor ref = lorq_logits.contiguous();
  r.images = static_cast<int>(B);
  r.max_abs_logit = ref.abs().max().item<double>();
  const at::Tensor ref_top = ref.argmax(1);
  for (const char* level : {"disabled", "all"}) {
    const std::vector<float> v = read_f32(prefix + "." + level + ".f32");
    EXPECT_EQ(static_cast<int64_t>(v.size()), B * K) << level;
    if (static_cast<int64_t>(v.size()) != B * K) return r;
    const at::Tensor ort = at::from_blob(const_cast<float*>(v.data()), {B, K}, at::kFloat).clone();
    const double diff = (ort - ref).abs().max().item<double>();
    const at::Tensor top = ort.argmax(1);
    const int agree = top.eq(ref_top).sum().item<int>();
    if (std::string(level) == "disabled") {
      r.max_abs_diff_disabled = diff;
      r.top1_agree_disabled = agree;
    } else {
      r.max_abs_diff_all = diff;
      r.top1_agree_all = agree;
      for (int64_t i = 0; i < B; ++i) {
        if (labels[i] < 0) continue;
        ++r.labeled;
        r.correct_lorq += ref_top[i].item<int64_t>() == labels[i];
        r.correct_ort_all += top[i].item<int64_t>() == labels[i];
      }
    }
  }
  std::printf(
      "ONNX Runtime vs lorq on %d images (max |logit| %.3g):\n"
      "  optimisations disabled: max |diff| %.3g, top-1 agreement %d/%d\n"
      "  optimisations all:      max |diff| %.3g, top-1 agreement %d/%d\n"
      "  top-1 accuracy on %d labelled images: lorq %.2f%%, ONNX Runtime (all) %.2f%%\n",
      r.images, r.max_abs_logit, r.max_abs_diff_disabled, r.top1_agree_disabled, r.images, r.max_abs_diff_all,
      r.top1_agree_all, r.images, r.labeled, r.labeled ? 100.0 * r.correct_lorq / r.labeled : 0.0,
      r.labeled ? 100.0 * r.correct_ort_all / r.labeled : 0.0);
  return r;
}

}  // namespace lorq::testdata
