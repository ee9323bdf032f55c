#pragma once
// Reader and writer for the Hugging Face safetensors format:
//   8-byte little-endian u64 N | N bytes of JSON header | raw little-endian data section.
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
// section) plus an optional "__metadata__" object of strings.
//
// Depends only on the standard library and POSIX; every problem with a file is reported as lorq::Error
// ("<path>: <problem>").
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lorq {

enum class DType { F32, F16, BF16, I8, U8, I32, I64 };

// Bytes per element.
size_t dtype_size(DType dtype);
// The safetensors spelling: "F32", "F16", "BF16", "I8", "U8", "I32", "I64".
const char* dtype_name(DType dtype);
// Inverse of dtype_name; returns false (and leaves *out alone) for anything else.
bool parse_dtype(const std::string& s, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // empty for a 0-d scalar
  size_t begin = 0, end = 0;   // byte offsets relative to the data section
  int64_t numel() const;       // product of shape (1 for a scalar)
  size_t nbytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Memory-maps the file (read-only, MAP_PRIVATE) and validates the whole header; throws lorq::Error.
  static SafetensorsFile open(const std::string& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  ~SafetensorsFile();

  const std::string& path() const { return path_; }
  // Sorted by begin offset (ties by end, then name).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr if absent.
  const TensorInfo* find(const std::string& name) const;
  // Throws lorq::Error "<path>: no tensor '<name>'".
  const TensorInfo& at(const std::string& name) const;
  // Pointer into the mapping (t.nbytes() bytes, not necessarily aligned). Throws lorq::Error if t does not lie
  // inside this file's data section.
  const uint8_t* data(const TensorInfo& t) const;
  // Converts any dtype to float (F16 and BF16 exactly; I32/I64 rounded to nearest float).
  std::vector<float> to_f32(const TensorInfo& t) const;
  // The "__metadata__" entry (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  struct Mapping;
  SafetensorsFile() = default;

  std::string path_;
  std::shared_ptr<const Mapping> mapping_;
  const uint8_t* data_section_ = nullptr;
  size_t data_size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // little-endian element data, nbytes long
  size_t nbytes = 0;
};

// Writes atomically: to "<path>.tmp-<pid>" first, fsync, then rename over path; on any failure removes the temp
// file and throws lorq::Error. Tensors are laid out in the given order with contiguous offsets; the JSON header is
// padded with spaces to a multiple of 8 bytes. Validates nbytes == numel * dtype_size and rejects duplicate names.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// IEEE half / bfloat16 conversions. Encoding rounds to nearest, ties to even; overflow goes to infinity; NaN stays
// NaN (quiet). Decoding is exact, including subnormals, infinities and NaN.
uint16_t float_to_f16(float f);
float f16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);
float bf16_to_float(uint16_t b);

}  // namespace lorq
