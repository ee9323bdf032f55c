// Fuzz-style robustness test for the safetensors reader and the export loader's packed-code reader
// (built with -fsanitize=address,undefined).
//
// Starting from a valid file, thousands of deterministic corruptions (every truncation, byte flips in the length
// prefix and header, textual header edits, randomly generated headers) are opened and every tensor is read. Each
// variant must either open with all tensors inside the data section, or throw lorq::Error naming the file: no crash,
// no sanitizer report, no other exception type.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/io/bit_pack.h"
#include "lorq/io/packed_export.h"
#include "lorq/io/safetensors.h"

namespace fs = std::filesystem;
using lorq::DType;
using lorq::SafetensorsFile;
using lorq::TensorInfo;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string u64_le(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

uint64_t load_u64_le(const std::string& b) {
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(b[i]);
  return n;
}

class SafetensorsFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "lorq_st_fuzz_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = (dir_ / "variant.safetensors").string();
    build_seed_file();
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // A valid file with one tensor of every dtype, odd shapes, a scalar, an empty tensor and metadata.
  void build_seed_file() {
    std::mt19937_64 rng(99);
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<lorq::TensorToWrite> tw;
    auto add = [&](const std::string& name, DType dt, std::vector<int64_t> shape) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<uint8_t> b(static_cast<size_t>(n) * lorq::dtype_size(dt));
      for (uint8_t& x : b) x = static_cast<uint8_t>(rng());
      buffers.push_back(std::move(b));
      tw.push_back({name, dt, shape, buffers.back().data(), buffers.back().size()});
    };
    buffers.reserve(16);
    add("layers.0.weight", DType::F32, {3, 4});
    add("layers.0.bias", DType::F16, {5});
    add("emb", DType::BF16, {2, 3});
    add("q", DType::I8, {7});
    add("none", DType::U8, {0});
    add("step", DType::I32, {});
    add("ids", DType::I64, {2});
    add("mask", DType::U8, {1, 3, 1});
    const std::string seed_path = (dir_ / "seed.safetensors").string();
    lorq::write_safetensors(seed_path, tw, {{"format", "pt"}, {"note", "fuzz seed"}});
    seed_ = read_bytes(seed_path);
    header_len_ = load_u64_le(seed_);
    header_ = seed_.substr(8, header_len_);
    data_ = seed_.substr(8 + header_len_);
  }

  // Opens one variant and reads every tensor. Returns true if it was accepted.
  bool check(const std::string& bytes, const std::string& what) {
    // Unlink first: truncating an existing file makes ext4 flush it on close (auto_da_alloc), which is slow.
    ::unlink(path_.c_str());
    write_bytes(path_, bytes);
    try {
      SafetensorsFile f = SafetensorsFile::open(path_);
      // Accepted: the header length must be sane and every tensor must lie inside the data section.
      if (bytes.size() < 8) {
        ADD_FAILURE() << what << ": accepted a file shorter than 8 bytes";
        return true;
      }
      const uint64_t n = load_u64_le(bytes);
      if (n > bytes.size() - 8) {
        ADD_FAILURE() << what << ": accepted a header length past the end";
        return true;
      }
      const size_t data_start = static_cast<size_t>(8 + n);
      const size_t data_size = bytes.size() - data_start;
      size_t prev_end = 0;
      const TensorInfo* prev = nullptr;
      for (const TensorInfo& t : f.tensors()) {
        const bool in_bounds = t.begin <= t.end && t.end <= data_size;
        const int64_t numel = t.numel();
        const bool size_ok = numel >= 0 && static_cast<size_t>(numel) * lorq::dtype_size(t.dtype) == t.nbytes();
        if (!in_bounds || !size_ok) {
          ADD_FAILURE() << what << ": accepted tensor '" << t.name << "' [" << t.begin << ", " << t.end << ") numel "
                        << numel << " with data section of " << data_size << " bytes";
          return true;
        }
        if (prev != nullptr && t.begin < prev->begin) ADD_FAILURE() << what << ": tensors() not sorted";
        if (t.begin != t.end) {
          if (t.begin < prev_end) ADD_FAILURE() << what << ": accepted overlapping tensor '" << t.name << "'";
          prev_end = std::max(prev_end, t.end);
        }
        prev = &t;
        if (f.find(t.name) != &t) ADD_FAILURE() << what << ": find('" << t.name << "') mismatch";
        const uint8_t* p = f.data(t);
        if (t.nbytes() > 0 && std::memcmp(p, bytes.data() + data_start + t.begin, t.nbytes()) != 0) {
          ADD_FAILURE() << what << ": data('" << t.name << "') points at the wrong bytes";
        }
        const std::vector<float> v = f.to_f32(t);
        if (v.size() != static_cast<size_t>(numel)) ADD_FAILURE() << what << ": to_f32 size mismatch";
      }
      for (const auto& kv : f.metadata()) (void)kv;
      return true;
    } catch (const lorq::Error& e) {
      const std::string msg = e.what();
      if (msg.rfind(path_ + ": ", 0) != 0) ADD_FAILURE() << what << ": error does not name the file: " << msg;
      return false;
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": threw a non-lorq exception: " << e.what();
      return false;
    } catch (...) {
      ADD_FAILURE() << what << ": threw a non-std exception";
      return false;
    }
  }

  std::string with_header(const std::string& header, const std::string& data) const {
    return u64_le(header.size()) + header + data;
  }

  fs::path dir_;
  std::string path_;
  std::string seed_, header_, data_;
  uint64_t header_len_ = 0;
};

TEST_F(SafetensorsFuzz, SeedIsValid) {
  ASSERT_TRUE(check(seed_, "seed"));
  SafetensorsFile f = SafetensorsFile::open(path_);
  EXPECT_EQ(f.tensors().size(), 8u);
  EXPECT_EQ(f.metadata().at("note"), "fuzz seed");
}

TEST_F(SafetensorsFuzz, EveryTruncation) {
  int accepted = 0;
  for (size_t len = 0; len < seed_.size(); ++len) {
    accepted += check(seed_.substr(0, len), "truncated to " + std::to_string(len));
    if (HasFailure()) return;
  }
  // Every truncation cuts the data section or the header, so none can be valid (the last tensor is not empty).
  EXPECT_EQ(accepted, 0);
  // Padding: appending bytes after the data section keeps the file valid.
  EXPECT_TRUE(check(seed_ + std::string(13, '\x7f'), "extended"));
}

TEST_F(SafetensorsFuzz, ByteFlipsInPrefixAndHeader) {
  std::mt19937_64 rng(0x5eed0001);
  static const char kInteresting[] = "{}[]\",:0123456789-+.eE \\\x00\xff";
  const std::string interesting(kInteresting, sizeof kInteresting - 1);  // keeps the NUL
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = seed_;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the length prefix and header; sometimes anywhere (data bytes are always valid).
      const size_t limit = (rng() % 8 == 0) ? b.size() : 8 + header_len_;
      const size_t pos = (rng() % 4 == 0) ? rng() % 8 : rng() % limit;
      switch (rng() % 3) {
        case 0:
          b[pos] = static_cast<char>(b[pos] ^ (1 << (rng() % 8)));
          break;
        case 1:
          b[pos] = static_cast<char>(rng());
          break;
        default:
          b[pos] = interesting[rng() % interesting.size()];
          break;
      }
    }
    if (check(b, "flip iteration " + std::to_string(iter))) {
      ++accepted;
    } else {
      ++rejected;
    }
    if (HasFailure()) return;
  }
  std::printf("byte flips: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, 0);
}

// Textual edits of the JSON header: digits changed/inserted/deleted, dtypes swapped, braces removed, numbers replaced
// by extreme values. Mostly the length prefix is fixed up so the edit reaches the validator.
TEST_F(SafetensorsFuzz, HeaderEdits) {
  std::mt19937_64 rng(0x5eed0002);
  const std::vector<std::string> dtypes = {"F32", "F16", "BF16", "I8", "U8", "I32", "I64", "F64", "BOOL", "", "f32"};
  const std::vector<std::string> numbers = {"0",
                                            "1",
                                            "-1",
                                            "18446744073709551615",
                                            "9223372036854775807",
                                            "9223372036854775808",
                                            "4294967296",
                                            "1e3",
                                            "0.5",
                                            "-0",
                                            "2.0",
                                            "1e400",
                                            "null",
                                            "\"3\"",
                                            "[]",
                                            "{}"};
  auto positions_of = [](const std::string& h, const std::string& chars) {
    std::vector<size_t> pos;
    for (size_t i = 0; i < h.size(); ++i) {
      if (chars.find(h[i]) != std::string::npos) pos.push_back(i);
    }
    return pos;
  };
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    std::string h = header_;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      const int op = static_cast<int>(rng() % 9);
      if (op <= 2) {  // change / insert / delete a digit
        const auto digits = positions_of(h, "0123456789");
        if (digits.empty()) continue;
        const size_t p = digits[rng() % digits.size()];
        if (op == 0) h[p] = static_cast<char>('0' + rng() % 10);
        if (op == 1) h.insert(p, 1, static_cast<char>('0' + rng() % 10));
        if (op == 2) h.erase(p, 1);
      } else if (op == 3) {  // swap a dtype
        std::vector<size_t> starts;
        for (size_t p = h.find("\"dtype\":\""); p != std::string::npos; p = h.find("\"dtype\":\"", p + 1)) {
          starts.push_back(p + 9);
        }
        if (starts.empty()) continue;
        const size_t s = starts[rng() % starts.size()];
        const size_t e = h.find('"', s);
        if (e == std::string::npos) continue;
        h.replace(s, e - s, dtypes[rng() % dtypes.size()]);
      } else if (op == 4) {  // remove a brace, bracket, quote, comma or colon
        const auto structural = positions_of(h, "{}[]\",:");
        if (structural.empty()) continue;
        h.erase(structural[rng() % structural.size()], 1);
      } else if (op == 5) {  // replace a whole number by an extreme or ill-typed value
        const auto digits = positions_of(h, "0123456789");
        if (digits.empty()) continue;
        size_t s = digits[rng() % digits.size()], e = s;
        while (s > 0 && std::isdigit(static_cast<unsigned char>(h[s - 1]))) --s;
        while (e < h.size() && std::isdigit(static_cast<unsigned char>(h[e]))) ++e;
        h.replace(s, e - s, numbers[rng() % numbers.size()]);
      } else if (op == 6) {  // negate a number
        const auto digits = positions_of(h, "0123456789");
        if (digits.empty()) continue;
        h.insert(digits[rng() % digits.size()], 1, '-');
      } else if (op == 7) {  // rename a tensor to another's name (duplicates) or copy a chunk elsewhere
        const size_t a = rng() % (h.size() + 1), len = rng() % 24;
        const size_t b = rng() % (h.size() + 1);
        h.insert(b, h.substr(std::min(a, h.size()), len));
      } else {  // delete a random chunk
        if (h.empty()) continue;
        const size_t a = rng() % h.size();
        h.erase(a, rng() % 16);
      }
    }
    std::string data = data_;
    if (rng() % 10 == 0) data.resize(rng() % (data_.size() + 16), '\x11');
    std::string bytes = with_header(h, data);
    if (rng() % 5 == 0) bytes.replace(0, 8, u64_le(header_len_));  // stale length prefix
    if (check(bytes, "header edit iteration " + std::to_string(iter) + ": " + h)) {
      ++accepted;
    } else {
      ++rejected;
    }
    if (HasFailure()) return;
  }
  std::printf("header edits: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, 0);
}

// Randomly generated, mostly well-formed headers: plausible and implausible shapes, dtypes and offsets (including
// holes, overlaps, empty tensors and offsets past the end) over data sections of random size.
TEST_F(SafetensorsFuzz, RandomHeaders) {
  std::mt19937_64 rng(0x5eed0003);
  const std::vector<std::string> dtypes = {"F32", "F16", "BF16", "I8", "U8", "I32", "I64", "F64"};
  auto rand_dim = [&]() -> std::string {
    switch (rng() % 12) {
      case 0:
        return "0";
      case 1:
        return std::to_string(1ull << (rng() % 64));
      case 2:
        return "-" + std::to_string(rng() % 5);
      default:
        return std::to_string(1 + rng() % 5);
    }
  };
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    const size_t data_size = rng() % 160;
    const int count = static_cast<int>(rng() % 5);
    std::string h = "{";
    uint64_t offset = rng() % 3 == 0 ? rng() % 8 : 0;
    for (int i = 0; i < count; ++i) {
      const std::string dt = dtypes[rng() % dtypes.size()];
      DType parsed = DType::U8;
      const size_t esize = lorq::parse_dtype(dt, &parsed) ? lorq::dtype_size(parsed) : 8;
      const int rank = static_cast<int>(rng() % 4);
      std::string shape = "[";
      uint64_t numel = 1;
      bool plausible = true;
      for (int d = 0; d < rank; ++d) {
        const std::string dim = rand_dim();
        shape += (d ? "," : "") + dim;
        if (dim[0] == '-' || dim.size() > 3) {
          plausible = false;
        } else {
          numel *= std::stoull(dim);
        }
      }
      shape += "]";
      uint64_t begin = offset, end = offset + (plausible ? numel * esize : rng() % 32);
      switch (rng() % 8) {
        case 0:
          end = begin + rng() % 16;
          break;
        case 1:
          begin = rng() % 64;
          end = begin + (plausible ? numel * esize : 0);
          break;
        case 2:
          std::swap(begin, end);
          break;
        default:
          break;
      }
      offset = std::max(offset, end) + (rng() % 4 == 0 ? rng() % 5 : 0);
      const std::string name = (rng() % 10 == 0) ? "t0" : "t" + std::to_string(i);
      h += (i ? "," : "") + std::string("\"") + name + "\":{\"dtype\":\"" + dt + "\",\"shape\":" + shape +
           ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
    }
    if (rng() % 4 == 0) h += std::string(count ? "," : "") + "\"__metadata__\":{\"a\":\"b\"}";
    h += "}";
    std::string data(data_size, '\0');
    for (char& c : data) c = static_cast<char>(rng());
    if (check(with_header(h, data), "random header iteration " + std::to_string(iter) + ": " + h)) {
      ++accepted;
    } else {
      ++rejected;
    }
    if (HasFailure()) return;
  }
  std::printf("random headers: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_GT(accepted, 100);
  EXPECT_GT(rejected, 100);
}

// The export loader (lorq/io/packed_export.h) on corrupted bit-packed exports: every group of every variant must
// either read back consistently (rows·cols codes, each below 2^bits, one positive scale and integer zero-point per
// row) or throw lorq::Error naming the file and the group; no crash, no sanitizer report.
class PackedExportFuzz : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "lorq_export_fuzz_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    path_ = (dir_ / "compressed.safetensors").string();
    std::mt19937_64 rng(5);
    std::vector<lorq::TensorToWrite> tw;
    buffers_.reserve(32);
    auto keep = [&](std::vector<uint8_t> b) -> const std::vector<uint8_t>& {
      buffers_.push_back(std::move(b));
      return buffers_.back();
    };
    // weight [5, 7] at 3 bits by rows, A [6, 3] at 4 bits by columns, B [3, 9] at 6 bits; one F32 zero-point.
    struct G {
      std::string prefix;
      int64_t rows, cols;
      int bits;
      bool columns, f32_zero;
    };
    for (const G& g : {G{"l.weight", 5, 7, 3, false, false}, G{"m.lowrank_a", 6, 3, 4, true, false},
                       G{"m.lowrank_b", 3, 9, 6, false, true}}) {
      const int64_t sr = g.columns ? g.cols : g.rows, sc = g.columns ? g.rows : g.cols;
      std::vector<uint8_t> codes(sr * sc);
      for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() % (1u << g.bits));
      std::vector<uint8_t> packed(sr * lorq::packed_row_bytes(sc, g.bits));
      lorq::pack_codes(codes.data(), sr, sc, g.bits, packed.data());
      const auto& p = keep(packed);
      tw.push_back({g.prefix + ".codes", DType::U8, {sr, static_cast<int64_t>(p.size() / sr)}, p.data(), p.size()});
      std::vector<uint8_t> scale(4 * g.rows), zero(g.f32_zero ? 4 * g.rows : g.rows);
      for (int64_t r = 0; r < g.rows; ++r) {
        const float sv = 0.01f * (1 + r), zv = static_cast<float>(r % 3);
        std::memcpy(&scale[4 * r], &sv, 4);
        if (g.f32_zero) {
          std::memcpy(&zero[4 * r], &zv, 4);
        } else {
          zero[r] = static_cast<uint8_t>(zv);
        }
      }
      const auto& sb = keep(scale);
      tw.push_back({g.prefix + ".scale", DType::F32, {g.rows}, sb.data(), sb.size()});
      const auto& zb = keep(zero);
      tw.push_back({g.prefix + ".zero_point", g.f32_zero ? DType::F32 : DType::U8, {g.rows}, zb.data(), zb.size()});
      meta_[g.prefix + ".bits"] = std::to_string(g.bits);
      meta_[g.prefix + ".shape"] = "[" + std::to_string(g.rows) + ", " + std::to_string(g.cols) + "]";
      meta_[g.prefix + ".layout"] = g.columns ? "columns" : "rows";
    }
    meta_["format"] = "lorq-compressed";
    meta_["lorq_format_version"] = "2";
    tensors_ = tw;
    lorq::write_safetensors(path_, tensors_, meta_);
    seed_ = read_bytes(path_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Loads a variant's groups as the model loader does. Returns true when every group was accepted.
  bool check(const std::string& what) {
    try {
      SafetensorsFile f = SafetensorsFile::open(path_);
      const int version = lorq::export_format_version(f.metadata(), path_);
      for (const std::string& prefix : lorq::quant_group_prefixes(f)) {
        const lorq::QuantGroup g = lorq::read_quant_group(f, prefix, version == 0 ? 2 : version);
        if (static_cast<int64_t>(g.codes.size()) != g.rows * g.cols || g.bits < 1 || g.bits > 8 ||
            static_cast<int64_t>(g.scale.size()) != g.rows || static_cast<int64_t>(g.zero_point.size()) != g.rows) {
          ADD_FAILURE() << what << ": accepted an inconsistent group '" << prefix << "'";
          return true;
        }
        for (uint8_t c : g.codes)
          if (c >= (1u << g.bits)) ADD_FAILURE() << what << ": code " << int(c) << " above " << g.bits << " bits";
      }
      return true;
    } catch (const lorq::Error& e) {
      if (std::string(e.what()).find(path_) == std::string::npos)
        ADD_FAILURE() << what << ": error does not name the file: " << e.what();
      return false;
    } catch (const std::exception& e) {
      ADD_FAILURE() << what << ": threw a non-lorq exception: " << e.what();
      return false;
    }
  }
  bool check_bytes(const std::string& bytes, const std::string& what) {
    ::unlink(path_.c_str());
    write_bytes(path_, bytes);
    return check(what);
  }
  bool check_meta(const std::map<std::string, std::string>& meta, const std::string& what) {
    ::unlink(path_.c_str());
    lorq::write_safetensors(path_, tensors_, meta);
    return check(what);
  }

  fs::path dir_;
  std::string path_, seed_;
  std::vector<std::vector<uint8_t>> buffers_;
  std::vector<lorq::TensorToWrite> tensors_;
  std::map<std::string, std::string> meta_;
};

TEST_F(PackedExportFuzz, SeedIsValid) { EXPECT_TRUE(check("seed")); }

// Metadata edits: bit widths, shapes, layouts and versions replaced by other plausible and implausible values.
TEST_F(PackedExportFuzz, MetadataEdits) {
  std::mt19937_64 rng(0x5eed0004);
  const std::vector<std::string> values = {"0",
                                           "1",
                                           "2",
                                           "3",
                                           "4",
                                           "5",
                                           "6",
                                           "7",
                                           "8",
                                           "9",
                                           "12",
                                           "-1",
                                           "",
                                           "4x",
                                           "[5, 7]",
                                           "[7, 5]",
                                           "[5, 6]",
                                           "[5, 8]",
                                           "[6, 3]",
                                           "[3, 6]",
                                           "[3, 9]",
                                           "[3, 10]",
                                           "[0, 7]",
                                           "[5]",
                                           "[5, 7, 1]",
                                           "[-5, 7]",
                                           "[5, 4294967296]",
                                           "[9223372036854775807, 1]",
                                           "[1e3, 2]",
                                           "{}",
                                           "[",
                                           "rows",
                                           "columns",
                                           "diagonal",
                                           "lorq-compressed",
                                           "pt"};
  std::vector<std::string> keys;
  for (const auto& [k, v] : meta_) keys.push_back(k);
  int accepted = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::map<std::string, std::string> meta = meta_;
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < edits; ++k) {
      const std::string& key = keys[rng() % keys.size()];
      if (rng() % 8 == 0) {
        meta.erase(key);
      } else {
        meta[key] = values[rng() % values.size()];
      }
    }
    (check_meta(meta, "metadata edit " + std::to_string(iter)) ? accepted : rejected) += 1;
    if (HasFailure()) return;
  }
  std::printf("export metadata edits: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, 0);
}

// Every truncation of the file, and random byte changes anywhere (header and packed codes, scales, zero-points).
TEST_F(PackedExportFuzz, TruncationsAndByteFlips) {
  int accepted = 0;
  for (size_t len = 0; len < seed_.size(); ++len) accepted += check_bytes(seed_.substr(0, len), "truncated");
  EXPECT_EQ(accepted, 0);
  std::mt19937_64 rng(0x5eed0005);
  int rejected = 0;
  accepted = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string b = seed_;
    for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k) {
      const size_t pos = 8 + rng() % (b.size() - 8);
      b[pos] = static_cast<char>(rng() % 2 ? rng() : b[pos] ^ (1 << (rng() % 8)));
    }
    (check_bytes(b, "flip " + std::to_string(iter)) ? accepted : rejected) += 1;
    if (HasFailure()) return;
  }
  std::printf("export byte flips: %d accepted, %d rejected\n", accepted, rejected);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(rejected, 0);
}

}  // namespace
