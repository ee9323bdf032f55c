#pragma once
// Bridges safetensors files and ATen tensors.
#include <ATen/core/Tensor.h>

#include <map>
#include <string>

#include "lorq/io/safetensors.h"

namespace lorq {

// Copies one tensor out of the mapped file (its dtype kept: F16 stays Half, I8 stays Char, ...).
at::Tensor read_tensor(const SafetensorsFile& file, const TensorInfo& info);
// Every tensor of the file, converted to float32 when `to_float` (integers included).
std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file, bool to_float);

DType dtype_of(const at::Tensor& t);  // throws lorq::Error for dtypes safetensors cannot hold
// Writes named tensors (made contiguous) atomically.
void write_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

}  // namespace lorq
