#pragma once
// The second moment XᵀX of every compressible layer's input on the calibration images (all tokens of every image
// as rows), which error-compensating quantization (quant/gptq.h) needs.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>

#include "lorq/common/progress.h"
#include "lorq/io/images.h"
#include "lorq/models/model.h"

namespace lorq {

struct InputMoment {
  at::Tensor xtx;    // [in, in] float64: Σ over rows of x xᵀ
  int64_t rows = 0;  // how many input rows (tokens) it sums
};

// One float forward pass of `images` [N, C, H, W] in batches, watching every compressible layer.
std::map<std::string, InputMoment> layer_input_moments(Model& model, const at::Tensor& images, int batch = 32,
                                                       const JobControl& job = {});

// The moments of the images of `set`, loaded `batch` at a time (any input sizes; images that fail to decode are
// skipped and named in `warnings`). `used`: the files whose inputs were summed, in order.
std::map<std::string, InputMoment> image_set_moments(Model& model, const ImageSet& set, int batch,
                                                     std::vector<std::string>* used, std::vector<std::string>* warnings,
                                                     const JobControl& job = {});

// Moments of disjoint image sets add: XᵀX and the row counts, layer by layer (a layer missing in `into` is copied).
void add_moments(std::map<std::string, InputMoment>& into, const std::map<std::string, InputMoment>& more);

// The layer's XᵀX for compensation, or an undefined tensor where compensation should not run: the layer is absent,
// or fewer rows than input features were seen (e.g. the classifier's one pooled row per image): such an XᵀX is
// singular, and compensating through it would fit the calibration images rather than the inputs at large.
at::Tensor compensation_moment(const std::map<std::string, InputMoment>& moments, const std::string& layer);

}  // namespace lorq
