#include "lorq/io/tensor_io.h"

#include <ATen/ATen.h>

#include <cstring>

#include "lorq/common/error.h"

namespace lorq {

namespace {
at::ScalarType scalar_type(DType d) {
  switch (d) {
    case DType::F32: return at::kFloat;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
  }
  return at::kFloat;
}
}  // namespace

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::F32;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kChar: return DType::I8;
    case at::kByte: return DType::U8;
    case at::kInt: return DType::I32;
    case at::kLong: return DType::I64;
    default: throw Error(std::string("tensor dtype ") + at::toString(t.scalar_type()) + " cannot be stored");
  }
}

at::Tensor read_tensor(const SafetensorsFile& file, const TensorInfo& info) {
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(scalar_type(info.dtype)));
  // Copy byte-wise: the mapping gives no alignment guarantee for the tensor's element type.
  if (info.nbytes() > 0) std::memcpy(t.data_ptr(), file.data(info), info.nbytes());
  return t;
}

std::map<std::string, at::Tensor> read_all_tensors(const SafetensorsFile& file, bool to_float) {
  std::map<std::string, at::Tensor> out;
  for (const TensorInfo& info : file.tensors()) {
    at::Tensor t = read_tensor(file, info);
    out[info.name] = to_float ? t.to(at::kFloat) : t;
  }
  return out;
}

void write_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // owns the contiguous copies until the write is done
  std::vector<TensorToWrite> items;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().contiguous().cpu());
    const at::Tensor& c = keep.back();
    items.push_back({name, dtype_of(c), c.sizes().vec(), c.data_ptr(), c.numel() * c.element_size()});
  }
  write_safetensors(path, items, metadata);
}

}  // namespace lorq
