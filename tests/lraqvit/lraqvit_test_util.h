#pragma once
// Shared pieces of the LRA-QViT tests: a small random ViT and the shipped demo model with a few of its images.
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "lorq/io/images.h"
#include "lorq/models/vit.h"
#include "shared_data.h"

namespace lorq::lraqvit_test {

inline std::unique_ptr<VisionTransformer> random_vit(uint64_t seed, int dim = 48, int depth = 2, int classes = 5) {
  VitConfig c;
  c.architecture = "test_vit";
  c.embed_dim = dim;
  c.num_heads = 3;
  c.depth = depth;
  c.img_size = 32;
  c.patch_size = 8;
  c.mlp_ratio = 4.0;
  c.num_classes = classes;
  c.preprocessing.input_height = c.preprocessing.input_width = 32;
  return VisionTransformer::create_random(c, seed);
}

inline std::string demo_model_dir() { return testdata::source_path("datasets/demo-vit"); }
inline std::string demo_images_dir() { return testdata::source_path("datasets/demo-shapes/images"); }

// The first `count` demo images (sorted by name), preprocessed for `model`.
inline at::Tensor demo_images(const Model& model, int count, int first = 0) {
  const ImageSet set = open_image_folder(demo_images_dir());
  std::vector<at::Tensor> xs;
  for (int i = first; i < first + count; ++i) xs.push_back(load_image(set.items.at(i).path, model.preprocessing()));
  return at::stack(xs);
}

inline double max_rel_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}

}  // namespace lorq::lraqvit_test
