// Figures for an export's ONNX model: runs `lorq export-onnx`'s model in ONNX Runtime (onnxruntime-node through
// tests/io/run_onnx.js) and the product's own forward pass of the same export on an image set, and prints top-1
// of both, their top-1 agreement and the largest logit difference, with ORT's graph optimisations disabled and
// enabled, plus the export's size breakdown and the ONNX file size.
//   bench_onnx_export EXPORT_DIR IMAGES [LIMIT]   (writes EXPORT_DIR/model.onnx when it is missing)
#include "lorq/io/onnx_export.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "lorq/io/export_size.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"
#include "lorq/tasks/evaluate.h"

using namespace lorq;

namespace {

std::vector<float> read_f32(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(b.size() / 4);
  std::memcpy(v.data(), b.data(), v.size() * 4);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_onnx_export EXPORT_DIR IMAGES [LIMIT]\n");
    return 2;
  }
  init_threads();
  const std::string dir = argv[1], onnx = dir + "/model.onnx";
  if (!std::filesystem::exists(onnx)) export_onnx(dir, onnx);
  std::printf("%sONNX model: %lld bytes\n", export_size_report(dir).c_str(),
              static_cast<long long>(std::filesystem::file_size(onnx)));
  auto model = load_model(dir);
  ImageSet set = open_image_set(argv[2], "", model->label_names());
  const size_t n = argc > 3 ? std::min<size_t>(std::stoul(argv[3]), set.items.size()) : set.items.size();
  const std::string work = dir + "/.ort-bench";
  std::filesystem::create_directories(work);
  int labeled = 0, c_lorq = 0, c_dis = 0, c_all = 0, agree_dis = 0, agree_all = 0;
  double diff_dis = 0, diff_all = 0;
  for (size_t begin = 0; begin < n; begin += 50) {
    const ImageBatch b = load_batch(set, begin, std::min(n, begin + 50), model->preprocessing(), 2);
    const at::Tensor x = b.images.contiguous();
    const at::Tensor ref = model->forward(x).logits();
    {
      std::ofstream out(work + "/input.f32", std::ios::binary);
      out.write(reinterpret_cast<const char*>(x.data_ptr<float>()), x.numel() * 4);
    }
    const std::string cmd =
        "node " LORQ_SOURCE_DIR "/tests/io/run_onnx.js " LORQ_ORT_DIR "/node_modules/onnxruntime-node " + onnx + " " +
        work + "/input.f32 " + std::to_string(x.size(0)) + " " + std::to_string(x.size(1)) + " " +
        std::to_string(x.size(2)) + " " + std::to_string(x.size(3)) + " " + work + "/ort >/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "ONNX Runtime failed: %s\n", cmd.c_str());
      return 1;
    }
    const at::Tensor top = ref.argmax(1);
    for (const char* level : {"disabled", "all"}) {
      std::vector<float> v = read_f32(work + "/ort." + level + ".f32");
      const at::Tensor o = at::from_blob(v.data(), ref.sizes(), at::kFloat).clone();
      const bool dis = std::string(level) == "disabled";
      (dis ? diff_dis : diff_all) = std::max(dis ? diff_dis : diff_all, (o - ref).abs().max().item<double>());
      const at::Tensor ot = o.argmax(1);
      (dis ? agree_dis : agree_all) += ot.eq(top).sum().item<int>();
      for (size_t i = 0; i < b.labels.size(); ++i)
        if (b.labels[i] >= 0) (dis ? c_dis : c_all) += ot[i].item<int64_t>() == b.labels[i];
    }
    for (size_t i = 0; i < b.labels.size(); ++i) {
      if (b.labels[i] < 0) continue;
      ++labeled;
      c_lorq += top[i].item<int64_t>() == b.labels[i];
    }
  }
  std::filesystem::remove_all(work);
  std::printf("%zu images (%d labelled)\n", n, labeled);
  std::printf("  lorq (the export's own forward)   top-1 %.2f%%\n", 100.0 * c_lorq / std::max(labeled, 1));
  std::printf("  ONNX Runtime, optimisations off   top-1 %.2f%%  agreement %d/%zu  max |logit diff| %.3g\n",
              100.0 * c_dis / std::max(labeled, 1), agree_dis, n, diff_dis);
  std::printf("  ONNX Runtime, all optimisations   top-1 %.2f%%  agreement %d/%zu  max |logit diff| %.3g\n",
              100.0 * c_all / std::max(labeled, 1), agree_all, n, diff_all);
  return 0;
}
