#include "lorq/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "lorq/common/error.h"

namespace lorq {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // same limit as the reference implementation
constexpr const char* kMetadataKey = "__metadata__";

std::string errno_text(int err) { return std::strerror(err); }

uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Little-endian loads from possibly unaligned memory, independent of host byte order.
uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t load_u64(const uint8_t* p) {
  return static_cast<uint64_t>(load_u32(p)) | (static_cast<uint64_t>(load_u32(p + 4)) << 32);
}

// Product of dims as int64, or false on a negative dim or overflow.
bool checked_numel(const std::vector<int64_t>& shape, int64_t* out) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return false;
    n *= d;
  }
  *out = n;
  return true;
}

// numel * dtype_size as size_t, or false on overflow.
bool checked_nbytes(int64_t numel, DType dtype, size_t* out) {
  const uint64_t n = static_cast<uint64_t>(numel);
  const uint64_t s = dtype_size(dtype);
  if (n > std::numeric_limits<size_t>::max() / s) return false;
  *out = static_cast<size_t>(n * s);
  return true;
}

std::string squote(const std::string& name) { return "'" + name + "'"; }

// A non-negative JSON integer that fits in int64 (for shape dims and offsets).
bool json_nonneg_int(const nlohmann::json& v, int64_t* out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    *out = static_cast<int64_t>(u);
    return true;
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < 0) return false;
    *out = i;
    return true;
  }
  return false;
}

// Parses the header, detecting duplicate keys (nlohmann silently keeps the last one otherwise).
nlohmann::json parse_header(const std::string& path, const char* begin, const char* end) {
  std::vector<std::set<std::string>> keys_stack;
  std::string duplicate;
  bool duplicate_top_level = false;
  auto callback = [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    switch (event) {
      case nlohmann::json::parse_event_t::object_start:
        keys_stack.emplace_back();
        break;
      case nlohmann::json::parse_event_t::object_end:
        if (!keys_stack.empty()) keys_stack.pop_back();
        break;
      case nlohmann::json::parse_event_t::key:
        if (!keys_stack.empty() && parsed.is_string()) {
          const std::string& key = parsed.get_ref<const std::string&>();
          if (!keys_stack.back().insert(key).second && duplicate.empty()) {
            duplicate = key;
            duplicate_top_level = keys_stack.size() == 1;
          }
        }
        break;
      default:
        break;
    }
    return true;
  };
  // nlohmann treats a NUL byte as the end of input; valid JSON never contains one (not even inside a string).
  if (std::memchr(begin, '\0', static_cast<size_t>(end - begin)) != nullptr) {
    throw Error(path, "invalid JSON header: contains a NUL byte");
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(begin, end, callback);
  } catch (const nlohmann::json::exception& e) {
    std::string why = e.what();
    if (why.size() > 240) why = why.substr(0, 240) + "...";  // the last token may be huge
    throw Error(path, "invalid JSON header: " + why);
  }
  if (!duplicate.empty()) {
    if (duplicate_top_level && duplicate != kMetadataKey) {
      throw Error(path, "duplicate tensor name " + squote(duplicate));
    }
    throw Error(path, "duplicate key " + squote(duplicate) + " in JSON header");
  }
  return header;
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& entry) {
  const std::string where = "tensor " + squote(name) + ": ";
  if (!entry.is_object()) throw Error(path, where + "entry is not an object");
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(field)) throw Error(path, where + "missing " + field);
  }
  TensorInfo t;
  t.name = name;

  const nlohmann::json& dtype = entry["dtype"];
  if (!dtype.is_string()) throw Error(path, where + "dtype is not a string");
  if (!parse_dtype(dtype.get_ref<const std::string&>(), &t.dtype)) {
    throw Error(path, where + "unknown dtype " + squote(dtype.get_ref<const std::string&>()));
  }

  const nlohmann::json& shape = entry["shape"];
  if (!shape.is_array()) throw Error(path, where + "shape is not an array");
  for (const nlohmann::json& d : shape) {
    int64_t dim;
    if (!json_nonneg_int(d, &dim))
      throw Error(path, where + "shape " + shape.dump() + " has a dim that is not a non-negative integer");
    t.shape.push_back(dim);
  }
  int64_t numel;
  size_t need;
  if (!checked_numel(t.shape, &numel) || !checked_nbytes(numel, t.dtype, &need)) {
    throw Error(path, where + "numel overflow for shape " + shape.dump());
  }

  const nlohmann::json& offsets = entry["data_offsets"];
  int64_t begin = 0, end = 0;
  if (!offsets.is_array() || offsets.size() != 2 || !json_nonneg_int(offsets[0], &begin) ||
      !json_nonneg_int(offsets[1], &end) || begin > end) {
    throw Error(path, where + "data_offsets " + offsets.dump() +
                          " must be two non-negative integers [begin, end] with begin <= end");
  }
  t.begin = static_cast<size_t>(begin);
  t.end = static_cast<size_t>(end);
  if (t.end - t.begin != need) {
    throw Error(path, where + "shape/offset mismatch: shape " + shape.dump() + " of " + dtype_name(t.dtype) +
                          " needs " + std::to_string(need) + " bytes, data_offsets span " +
                          std::to_string(t.end - t.begin));
  }
  return t;
}

float f32_from(const uint8_t* p) { return bits_float(load_u32(p)); }

// Writes all of buf or returns an errno value.
int write_all(int fd, const void* buf, size_t n) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// dtypes

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
    case DType::I8:
      return 1;
    case DType::U8:
      return 1;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
  }
  return 1;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::I8:
      return "I8";
    case DType::U8:
      return "U8";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
  }
  return "?";
}

bool parse_dtype(const std::string& s, DType* out) {
  static const std::pair<const char*, DType> kTable[] = {
      {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"I32", DType::I32}, {"I64", DType::I64},
  };
  for (const auto& [name, dtype] : kTable) {
    if (s == name) {
      *out = dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------------------------
// half / bfloat16

uint16_t float_to_f16(float f) {
  const uint32_t x = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  uint32_t a = x & 0x7fffffffu;
  if (a >= 0x7f800000u) {  // inf or NaN
    if (a == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // quiet NaN, keep top payload bits
  }
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 (half-way past 65504, odd) rounds to inf
  if (a >= 0x38800000u) {                       // normal half range (>= 2^-14)
    a += 0xfffu + ((a >> 13) & 1u);             // round to nearest, ties to even
    return static_cast<uint16_t>(sign | ((a - 0x38000000u) >> 13));
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25: rounds to zero (2^-25 is a tie, zero is even)
  // Subnormal half: result m = round(value * 2^24), value = mant * 2^(e - 150).
  const uint32_t e = a >> 23;
  const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;  // 14..24
  uint32_t q = mant >> shift;
  const uint32_t rem = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;  // may carry into the smallest normal, which is correct
  return static_cast<uint16_t>(sign | q);
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return bits_float(sign);
  int e = 1;
  while (!(mant & 0x400u)) {
    mant <<= 1;
    --e;
  }
  mant &= 0x3ffu;
  return bits_float(sign | (static_cast<uint32_t>(e + 112) << 23) | (mant << 13));
}

uint16_t float_to_bf16(float f) {
  uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x0040u);  // quiet NaN
  x += 0x7fffu + ((x >> 16) & 1u);  // round to nearest, ties to even; overflow lands on inf
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// ---------------------------------------------------------------------------------------------------------------
// reader

struct SafetensorsFile::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  Mapping(void* a, size_t s) : addr(a), size(s) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (addr != nullptr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, "cannot open: " + errno_text(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(path, "cannot stat: " + errno_text(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path, "not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    throw Error(path, "file too short for a safetensors header (" + std::to_string(file_size) + " bytes)");
  }
  if (file_size > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    throw Error(path, "file too large to map");
  }
  void* addr = ::mmap(nullptr, static_cast<size_t>(file_size), PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (addr == MAP_FAILED) throw Error(path, "cannot memory-map: " + errno_text(map_err));

  SafetensorsFile f;
  f.path_ = path;
  f.mapping_ = std::make_shared<const Mapping>(addr, static_cast<size_t>(file_size));
  const uint8_t* base = static_cast<const uint8_t*>(addr);

  const uint64_t header_len = load_u64(base);
  if (header_len > kMaxHeaderBytes) {
    throw Error(path, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  }
  if (header_len > file_size - 8) {
    throw Error(path, "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                          std::to_string(file_size) + " bytes)");
  }
  const char* header_begin = reinterpret_cast<const char*>(base + 8);
  const nlohmann::json header = parse_header(path, header_begin, header_begin + header_len);
  if (!header.is_object()) throw Error(path, "JSON header is not an object");

  f.data_section_ = base + 8 + header_len;
  f.data_size_ = static_cast<size_t>(file_size - 8 - header_len);

  for (const auto& [key, value] : header.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) throw Error(path, "__metadata__ is not an object of strings");
      for (const auto& [mk, mv] : value.items()) {
        if (!mv.is_string()) throw Error(path, "__metadata__ value for " + squote(mk) + " is not a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    TensorInfo t = parse_entry(path, key, value);
    if (t.end > f.data_size_) {
      throw Error(path, "tensor " + squote(key) + ": data_offsets end " + std::to_string(t.end) +
                            " is past the end of the data section (" + std::to_string(f.data_size_) + " bytes)");
    }
    f.tensors_.push_back(std::move(t));
  }

  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  // Overlap check over the non-empty tensors (an empty tensor occupies no bytes).
  const TensorInfo* prev = nullptr;
  for (const TensorInfo& t : f.tensors_) {
    if (t.begin == t.end) continue;
    if (prev != nullptr && t.begin < prev->end) {
      throw Error(path, "tensors " + squote(prev->name) + " and " + squote(t.name) + " overlap");
    }
    if (prev == nullptr || t.end > prev->end) prev = &t;
  }
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (t == nullptr) throw Error(path_, "no tensor " + squote(name));
  return *t;
}

const uint8_t* SafetensorsFile::data(const TensorInfo& t) const {
  if (t.begin > t.end || t.end > data_size_) {
    throw Error(path_, "tensor " + squote(t.name) + " does not lie inside this file's data section");
  }
  return data_section_ + t.begin;
}

std::vector<float> SafetensorsFile::to_f32(const TensorInfo& t) const {
  const uint8_t* p = data(t);
  const size_t esize = dtype_size(t.dtype);
  if (t.nbytes() % esize != 0) {
    throw Error(path_, "tensor " + squote(t.name) + ": byte size is not a multiple of the element size");
  }
  const size_t n = t.nbytes() / esize;
  std::vector<float> out(n);
  switch (t.dtype) {
    case DType::F32:
      for (size_t i = 0; i < n; ++i) out[i] = f32_from(p + 4 * i);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_float(load_u16(p + 2 * i));
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(load_u16(p + 2 * i));
      break;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int8_t>(p[i]));
      break;
    case DType::U8:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      break;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int32_t>(load_u32(p + 4 * i)));
      break;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int64_t>(load_u64(p + 8 * i)));
      break;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// writer

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header[kMetadataKey] = std::move(meta);
  }
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    const std::string where = "tensor " + squote(t.name) + ": ";
    if (t.name == kMetadataKey) throw Error(path, "tensor name " + squote(t.name) + " is reserved");
    if (!names.insert(t.name).second) throw Error(path, "duplicate tensor name " + squote(t.name));
    int64_t numel;
    size_t need;
    if (!checked_numel(t.shape, &numel)) throw Error(path, where + "shape has a negative dim or overflows");
    if (!checked_nbytes(numel, t.dtype, &need)) throw Error(path, where + "numel overflow");
    if (need != t.nbytes) {
      throw Error(path, where + "nbytes " + std::to_string(t.nbytes) + " does not match shape and dtype (" +
                            std::to_string(need) + " bytes)");
    }
    if (t.nbytes > 0 && t.data == nullptr) throw Error(path, where + "data is null");
    if (offset > std::numeric_limits<uint64_t>::max() - t.nbytes) throw Error(path, "total data size overflows");
    nlohmann::ordered_json entry = nlohmann::ordered_json::object();
    entry["dtype"] = dtype_name(t.dtype);
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + t.nbytes};
    header[t.name] = std::move(entry);
    offset += t.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("cannot encode the JSON header: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderBytes) throw Error(path, "JSON header exceeds the 100 MB limit");

  uint8_t prefix[8];
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<uint8_t>(n >> (8 * i));

  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(path, "cannot create " + tmp + ": " + errno_text(errno));
  auto fail = [&](const std::string& what, int err, bool close_fd) {
    if (close_fd) ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(path, what + ": " + errno_text(err));
  };
  int err = write_all(fd, prefix, sizeof prefix);
  if (err == 0) err = write_all(fd, text.data(), text.size());
  for (size_t i = 0; err == 0 && i < tensors.size(); ++i) {
    if (tensors[i].nbytes > 0) err = write_all(fd, tensors[i].data, tensors[i].nbytes);
  }
  if (err != 0) fail("cannot write " + tmp, err, true);
  if (::fsync(fd) != 0) fail("cannot fsync " + tmp, errno, true);
  if (::close(fd) != 0) fail("cannot close " + tmp, errno, false);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename " + tmp + " to " + path, errno, false);

  // Best effort: make the rename itself durable.
  const size_t slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace lorq
