// Tests for the safetensors reader/writer and the half/bfloat16 conversions (core/src/safetensors.cpp).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/io/safetensors.h"

namespace fs = std::filesystem;
using lorq::DType;
using lorq::SafetensorsFile;
using lorq::TensorInfo;
using lorq::TensorToWrite;

namespace {

// A fresh scratch directory per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "lorq_st_XXXXXX").string();
    ASSERT_NE(::mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  // Names of everything in the scratch directory.
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir_)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  fs::path dir_;
};

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

// A file with the given header text and data_size bytes of data (0, 1, 2, ...).
std::string make_file_bytes(const std::string& header, size_t data_size) {
  std::string data(data_size, '\0');
  for (size_t i = 0; i < data_size; ++i) data[i] = static_cast<char>(i & 0xff);
  return u64_le(header.size()) + header + data;
}

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

// ---------------------------------------------------------------------------------------------------------------
// dtype helpers

TEST(SafetensorsDType, NamesSizesAndParsing) {
  const std::vector<std::pair<DType, size_t>> all = {{DType::F32, 4}, {DType::F16, 2}, {DType::BF16, 2}, {DType::I8, 1},
                                                     {DType::U8, 1},  {DType::I32, 4}, {DType::I64, 8}};
  for (const auto& [dt, size] : all) {
    EXPECT_EQ(lorq::dtype_size(dt), size);
    DType parsed = DType::U8;
    ASSERT_TRUE(lorq::parse_dtype(lorq::dtype_name(dt), &parsed)) << lorq::dtype_name(dt);
    EXPECT_EQ(parsed, dt);
  }
  EXPECT_STREQ(lorq::dtype_name(DType::BF16), "BF16");
  DType out = DType::I8;
  EXPECT_FALSE(lorq::parse_dtype("F64", &out));
  EXPECT_FALSE(lorq::parse_dtype("f32", &out));
  EXPECT_FALSE(lorq::parse_dtype("", &out));
  EXPECT_EQ(out, DType::I8);
}

TEST(SafetensorsDType, TensorInfoNumel) {
  TensorInfo t;
  EXPECT_EQ(t.numel(), 1);  // 0-d scalar
  t.shape = {3, 0, 5};
  EXPECT_EQ(t.numel(), 0);
  t.shape = {2, 3, 7};
  EXPECT_EQ(t.numel(), 42);
  t.begin = 8;
  t.end = 176;
  EXPECT_EQ(t.nbytes(), 168u);
}

// ---------------------------------------------------------------------------------------------------------------
// half / bfloat16 against slow obviously-correct references

double ref_f16_decode(uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -24);  // mant/1024 * 2^-14
  } else if (exp == 31) {
    v = mant == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(static_cast<double>(1024 + mant), exp - 25);  // (1 + mant/1024) * 2^(exp-15)
  }
  return sign ? -v : v;
}

double ref_bf16_decode(uint16_t b) {
  const int sign = b >> 15, exp = (b >> 7) & 0xff, mant = b & 0x7f;
  double v;
  if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), -133);  // mant/128 * 2^-126
  } else if (exp == 255) {
    v = mant == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else {
    v = std::ldexp(static_cast<double>(128 + mant), exp - 134);  // (1 + mant/128) * 2^(exp-127)
  }
  return sign ? -v : v;
}

// Values of the positive codes 0 .. inf_code in order; the infinity code gets the value the next exponent would
// have, so "nearest, ties to even" against this table is exactly IEEE rounding including overflow.
std::vector<double> positive_table(double (*decode)(uint16_t), uint16_t inf_code, double inf_value) {
  std::vector<double> t(inf_code + 1);
  for (uint32_t c = 0; c < inf_code; ++c) t[c] = decode(static_cast<uint16_t>(c));
  t[inf_code] = inf_value;
  return t;
}

// Nearest code by binary search, ties to the even code. Not for NaN.
uint16_t ref_encode(float f, const std::vector<double>& table) {
  const double a = std::fabs(static_cast<double>(f));
  const size_t last = table.size() - 1;
  size_t code;
  if (a >= table[last]) {
    code = last;
  } else {
    const size_t i = static_cast<size_t>(std::lower_bound(table.begin(), table.end(), a) - table.begin());
    if (table[i] == a) {
      code = i;
    } else {
      const double lo = a - table[i - 1], hi = table[i] - a;
      code = lo < hi ? i - 1 : hi < lo ? i : ((i - 1) % 2 == 0 ? i - 1 : i);
    }
  }
  return static_cast<uint16_t>(code | (std::signbit(f) ? 0x8000u : 0u));
}

void check_decode_all(float (*decode)(uint16_t), double (*ref)(uint16_t), const char* what) {
  int failures = 0;
  for (uint32_t c = 0; c < 65536 && failures < 10; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    const float got = decode(h);
    const double want = ref(h);
    if (std::isnan(want)) {
      if (!std::isnan(got) || std::signbit(got) != std::signbit(want)) {
        ADD_FAILURE() << what << " decode of NaN pattern 0x" << std::hex << c << " gave " << got;
        ++failures;
      }
    } else if (float_bits(got) != float_bits(static_cast<float>(want))) {
      ADD_FAILURE() << what << " decode 0x" << std::hex << c << std::dec << ": got " << got << " want " << want;
      ++failures;
    }
  }
}

void check_encode(uint16_t (*encode)(float), float f, const std::vector<double>& table, const char* what,
                  int* failures) {
  if (*failures >= 10) return;
  const uint16_t got = encode(f);
  if (std::isnan(f)) {
    const bool is_nan = what[0] == 'f' ? ((got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0)
                                       : ((got & 0x7f80) == 0x7f80 && (got & 0x7f) != 0);
    if (!is_nan) {
      ADD_FAILURE() << what << " encode of NaN gave 0x" << std::hex << got;
      ++*failures;
    }
    return;
  }
  const uint16_t want = ref_encode(f, table);
  if (got != want) {
    ADD_FAILURE() << what << " encode of " << f << " (bits 0x" << std::hex << float_bits(f) << "): got 0x" << got
                  << " want 0x" << want;
    ++*failures;
  }
}

TEST(SafetensorsHalf, F16DecodeAllPatterns) { check_decode_all(lorq::f16_to_float, ref_f16_decode, "f16"); }

TEST(SafetensorsHalf, BF16DecodeAllPatterns) { check_decode_all(lorq::bf16_to_float, ref_bf16_decode, "bf16"); }

TEST(SafetensorsHalf, EncodeDecodeRoundTripAllPatterns) {
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    const bool f16_nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    const bool bf16_nan = (h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0;
    if (!f16_nan) {
      ASSERT_EQ(lorq::float_to_f16(lorq::f16_to_float(h)), h) << std::hex << c;
    } else {
      const uint16_t back = lorq::float_to_f16(lorq::f16_to_float(h));
      ASSERT_TRUE((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0) << std::hex << c;
    }
    if (!bf16_nan) {
      ASSERT_EQ(lorq::float_to_bf16(lorq::bf16_to_float(h)), h) << std::hex << c;
    } else {
      const uint16_t back = lorq::float_to_bf16(lorq::bf16_to_float(h));
      ASSERT_TRUE((back & 0x7f80) == 0x7f80 && (back & 0x7f) != 0) << std::hex << c;
    }
  }
}

// Random floats of every kind, plus every tie point (and its neighbours) between adjacent representable values.
void run_encode_test(uint16_t (*encode)(float), const std::vector<double>& table, float range, const char* what) {
  int failures = 0;
  std::mt19937_64 rng(12345);
  std::uniform_int_distribution<uint32_t> any_bits;
  std::uniform_real_distribution<float> in_range(-range, range);
  std::uniform_real_distribution<double> log_mag(-40.0, 40.0);
  for (int i = 0; i < 100000; ++i) {
    check_encode(encode, bits_float(any_bits(rng)), table, what, &failures);
    check_encode(encode, in_range(rng), table, what, &failures);
    const float m = static_cast<float>(std::exp2(log_mag(rng)));
    check_encode(encode, (i & 1) ? m : -m, table, what, &failures);
  }
  for (size_t i = 0; i + 1 < table.size(); ++i) {
    const float mid = static_cast<float>((table[i] + table[i + 1]) / 2);
    ASSERT_EQ(static_cast<double>(mid), (table[i] + table[i + 1]) / 2) << "tie not representable as float";
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, std::numeric_limits<float>::infinity())}) {
      check_encode(encode, f, table, what, &failures);
      check_encode(encode, -f, table, what, &failures);
    }
  }
  const float specials[] = {0.0f,
                            -0.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max(),
                            std::numeric_limits<float>::lowest(),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::signaling_NaN()};
  for (float f : specials) check_encode(encode, f, table, what, &failures);
}

TEST(SafetensorsHalf, F16EncodeIsNearestTiesToEven) {
  const auto table = positive_table(ref_f16_decode, 0x7c00, 65536.0);
  run_encode_test(lorq::float_to_f16, table, 70000.0f, "f16");
  EXPECT_EQ(lorq::float_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(lorq::float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(lorq::float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(lorq::float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(lorq::float_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(lorq::float_to_f16(std::ldexp(1.0f, -25)), 0x0000);                     // tie to even zero
  EXPECT_EQ(lorq::float_to_f16(std::ldexp(3.0f, -25)), 0x0002);                     // tie 1.5 ulp -> 2
  EXPECT_EQ(lorq::float_to_f16(std::ldexp(1.0f, -14) * (1023.5f / 1024)), 0x0400);  // carries into normal
}

TEST(SafetensorsHalf, BF16EncodeIsNearestTiesToEven) {
  const auto table = positive_table(ref_bf16_decode, 0x7f80, std::ldexp(1.0, 128));
  run_encode_test(lorq::float_to_bf16, table, 1e38f, "bf16");
  EXPECT_EQ(lorq::float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(lorq::float_to_bf16(bits_float(0x3f808000u)), 0x3f80);  // tie, even stays
  EXPECT_EQ(lorq::float_to_bf16(bits_float(0x3f818000u)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(lorq::float_to_bf16(std::numeric_limits<float>::max()), 0x7f80);
}

// ---------------------------------------------------------------------------------------------------------------
// round trip

template <typename T>
std::vector<uint8_t> as_bytes(const std::vector<T>& v) {
  std::vector<uint8_t> b(v.size() * sizeof(T));
  if (!b.empty()) std::memcpy(b.data(), v.data(), b.size());
  return b;
}

TEST_F(SafetensorsTest, RoundTripEveryDType) {
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);

  struct Src {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
    std::vector<float> expect;
  };
  std::vector<Src> src;
  auto add = [&](const std::string& name, DType dt, std::vector<int64_t> shape) {
    Src s{name, dt, shape, {}, {}};
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int64_t i = 0; i < n; ++i) {
      const float x = normal(rng);
      switch (dt) {
        case DType::F32: {
          const uint32_t b = float_bits(x);
          for (int k = 0; k < 4; ++k) s.bytes.push_back(static_cast<uint8_t>(b >> (8 * k)));
          s.expect.push_back(x);
          break;
        }
        case DType::F16: {
          const uint16_t h = lorq::float_to_f16(x);
          s.bytes.push_back(static_cast<uint8_t>(h));
          s.bytes.push_back(static_cast<uint8_t>(h >> 8));
          s.expect.push_back(lorq::f16_to_float(h));
          break;
        }
        case DType::BF16: {
          const uint16_t h = lorq::float_to_bf16(x);
          s.bytes.push_back(static_cast<uint8_t>(h));
          s.bytes.push_back(static_cast<uint8_t>(h >> 8));
          s.expect.push_back(lorq::bf16_to_float(h));
          break;
        }
        case DType::I8: {
          const int8_t v = static_cast<int8_t>(static_cast<int>(x * 40) % 128);
          s.bytes.push_back(static_cast<uint8_t>(v));
          s.expect.push_back(v);
          break;
        }
        case DType::U8: {
          const uint8_t v = static_cast<uint8_t>(rng());
          s.bytes.push_back(v);
          s.expect.push_back(v);
          break;
        }
        case DType::I32: {
          const int32_t v = static_cast<int32_t>(x * 1000);
          for (int k = 0; k < 4; ++k) s.bytes.push_back(static_cast<uint8_t>(static_cast<uint32_t>(v) >> (8 * k)));
          s.expect.push_back(static_cast<float>(v));
          break;
        }
        case DType::I64: {
          const int64_t v = static_cast<int64_t>(x * 1e6) * 1000;
          for (int k = 0; k < 8; ++k) s.bytes.push_back(static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * k)));
          s.expect.push_back(static_cast<float>(v));
          break;
        }
      }
    }
    src.push_back(std::move(s));
  };
  add("model.layers.0.weight", DType::F32, {3, 5, 7});
  add("f16/odd", DType::F16, {1, 3});
  add("bf16.odd", DType::BF16, {2, 1, 3});
  add("i8", DType::I8, {7});
  add("u8", DType::U8, {5, 3});
  add("scalar", DType::I32, {});
  add("empty", DType::I64, {0, 4});
  add("i64", DType::I64, {3});
  add("zeta \xc3\xa9", DType::F32, {1});  // non-ASCII (UTF-8) name
  add("empty2", DType::F16, {2, 0});

  std::vector<TensorToWrite> tw;
  for (const Src& s : src) tw.push_back({s.name, s.dtype, s.shape, s.bytes.data(), s.bytes.size()});
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"lorq.rank", "16"}, {"quote", "a\"b\\c\n"}};
  const std::string path = file("rt.safetensors");
  lorq::write_safetensors(path, tw, meta);

  // Layout: header length is a multiple of 8, data section holds exactly the tensors.
  const std::string raw = read_bytes(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(raw[i]);
  EXPECT_EQ(n % 8, 0u);
  size_t total = 0;
  for (const Src& s : src) total += s.bytes.size();
  EXPECT_EQ(raw.size(), 8 + n + total);
  EXPECT_EQ(raw[8], '{');

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), src.size());
  // Written in the given order with contiguous offsets (empty tensors share the offset of the next one).
  size_t offset = 0;
  for (const Src& s : src) {
    const TensorInfo& t = f.at(s.name);
    EXPECT_EQ(t.name, s.name);
    EXPECT_EQ(t.dtype, s.dtype) << s.name;
    EXPECT_EQ(t.shape, s.shape) << s.name;
    EXPECT_EQ(t.begin, offset) << s.name;
    EXPECT_EQ(t.nbytes(), s.bytes.size()) << s.name;
    offset += s.bytes.size();
    ASSERT_EQ(std::vector<uint8_t>(f.data(t), f.data(t) + t.nbytes()), s.bytes) << s.name;
    const std::vector<float> got = f.to_f32(t);
    ASSERT_EQ(got.size(), s.expect.size()) << s.name;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(float_bits(got[i]), float_bits(s.expect[i])) << s.name << i;
  }
  EXPECT_EQ(f.at("scalar").numel(), 1);
  EXPECT_TRUE(f.at("scalar").shape.empty());
  EXPECT_EQ(f.at("empty").numel(), 0);
  // tensors() is sorted by begin offset.
  for (size_t i = 1; i < f.tensors().size(); ++i) EXPECT_LE(f.tensors()[i - 1].begin, f.tensors()[i].begin);
  // No temp file left behind.
  EXPECT_EQ(listing(), std::vector<std::string>{"rt.safetensors"});
}

TEST_F(SafetensorsTest, EmptyFileAndNoMetadata) {
  const std::string path = file("empty.safetensors");
  lorq::write_safetensors(path, {});
  const std::string raw = read_bytes(path);
  EXPECT_EQ(raw, u64_le(8) + "{}      ");
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(f.find("x"), nullptr);

  // Unpadded "{}" is valid as well.
  write_bytes(path, make_file_bytes("{}", 0));
  EXPECT_TRUE(SafetensorsFile::open(path).tensors().empty());
}

TEST_F(SafetensorsTest, FindAtAndMove) {
  const std::string path = file("m.safetensors");
  const std::vector<float> v = {1.5f, -2.25f, 3.0f};
  lorq::write_safetensors(path, {{"w", DType::F32, {3}, v.data(), v.size() * 4}});
  SafetensorsFile a = SafetensorsFile::open(path);
  const TensorInfo* t = a.find("w");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(a.find("nope"), nullptr);
  try {
    a.at("nope");
    FAIL() << "expected lorq::Error";
  } catch (const lorq::Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": no tensor 'nope'");
  }
  SafetensorsFile b = std::move(a);
  EXPECT_EQ(b.to_f32(b.at("w")), v);
  EXPECT_EQ(b.find("w"), t);  // the tensor list moved with the object
  SafetensorsFile c = SafetensorsFile::open(path);
  c = std::move(b);
  EXPECT_EQ(c.to_f32(*t), v);
  // A TensorInfo that does not belong to the file is refused instead of read out of bounds.
  TensorInfo bogus = *t;
  bogus.end = 1 << 20;
  EXPECT_THROW(c.data(bogus), lorq::Error);
  EXPECT_THROW(c.to_f32(bogus), lorq::Error);
}

TEST_F(SafetensorsTest, ReaderAcceptsHolesUnalignedAndEmptyTensorsAnywhere) {
  // Hand-made header: unaligned F32 at offset 1, a hole, an empty tensor inside another one, holes at the end.
  const std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[1,9]},)"
                             R"("z":{"dtype":"U8","shape":[0],"data_offsets":[4,4]},)"
                             R"("b":{"dtype":"I8","shape":[1,1],"data_offsets":[12,13],"extra":"ignored"},)"
                             R"("__metadata__":{"k":"v"}})";
  std::string bytes = make_file_bytes(header, 16);
  const size_t data_start = 8 + header.size();
  const float x = 0.75f, y = -1e-3f;
  std::memcpy(&bytes[data_start + 1], &x, 4);
  std::memcpy(&bytes[data_start + 5], &y, 4);
  bytes[data_start + 12] = static_cast<char>(-5);
  const std::string path = file("holes.safetensors");
  write_bytes(path, bytes);
  SafetensorsFile f = SafetensorsFile::open(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "a");
  EXPECT_EQ(f.tensors()[1].name, "z");
  EXPECT_EQ(f.tensors()[2].name, "b");
  EXPECT_EQ(f.to_f32(f.at("a")), (std::vector<float>{x, y}));
  EXPECT_TRUE(f.to_f32(f.at("z")).empty());
  EXPECT_EQ(f.to_f32(f.at("b")), std::vector<float>{-5.0f});
  EXPECT_EQ(f.metadata().at("k"), "v");
}

// ---------------------------------------------------------------------------------------------------------------
// rejections

struct RejectCase {
  const char* name;
  std::string bytes;
  const char* expect;  // substring of the message after the path
};

std::string entry(const std::string& dtype, const std::string& shape, const std::string& offsets) {
  return R"({"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
}

std::vector<RejectCase> reject_cases() {
  auto one = [](const std::string& e, size_t data = 64) { return make_file_bytes(R"({"t":)" + e + "}", data); };
  const std::string ok = entry(R"("F32")", "[2]", "[0,8]");
  return {
      {"EmptyFile", "", "too short"},
      {"SevenBytes", std::string(7, '\0'), "too short"},
      {"HeaderPastEnd", u64_le(100) + std::string(10, ' '), "past the end of the file"},
      {"HeaderPastEndByOne", u64_le(3) + "{}", "past the end of the file"},
      {"HeaderOver100MB", u64_le(100'000'001) + "{}", "100 MB"},
      {"HeaderLengthHuge", u64_le(~0ull) + "{}", "100 MB"},
      {"ZeroLengthHeader", u64_le(0) + "{}", "invalid JSON"},
      {"InvalidJson", make_file_bytes(R"({"t":)", 0), "invalid JSON"},
      {"TrailingGarbage", make_file_bytes("{}x", 0), "invalid JSON"},
      {"NulInHeader", make_file_bytes(std::string("{}\0", 3), 0), "invalid JSON"},
      {"InvalidUtf8", make_file_bytes("{\"\xff\":1}", 0), "invalid JSON"},
      {"JsonArray", make_file_bytes("[1,2]", 0), "not an object"},
      {"JsonNumber", make_file_bytes("42", 0), "not an object"},
      {"JsonNull", make_file_bytes("null", 0), "not an object"},
      {"EntryNotObject", one("5"), "entry is not an object"},
      {"EntryArray", one("[]"), "entry is not an object"},
      {"MissingDtype", one(R"({"shape":[2],"data_offsets":[0,8]})"), "missing dtype"},
      {"MissingShape", one(R"({"dtype":"F32","data_offsets":[0,8]})"), "missing shape"},
      {"MissingOffsets", one(R"({"dtype":"F32","shape":[2]})"), "missing data_offsets"},
      {"UnknownDtype", one(entry(R"("F64")", "[1]", "[0,8]")), "unknown dtype 'F64'"},
      {"LowercaseDtype", one(entry(R"("f32")", "[2]", "[0,8]")), "unknown dtype"},
      {"DtypeNotString", one(entry("4", "[2]", "[0,8]")), "dtype is not a string"},
      {"ShapeNotArray", one(entry(R"("F32")", "2", "[0,8]")), "shape is not an array"},
      {"NegativeDim", one(entry(R"("F32")", "[-2]", "[0,8]")), "non-negative integer"},
      {"FloatDim", one(entry(R"("F32")", "[2.0]", "[0,8]")), "non-negative integer"},
      {"FractionalDim", one(entry(R"("F32")", "[1.5]", "[0,8]")), "non-negative integer"},
      {"StringDim", one(entry(R"("F32")", R"(["2"])", "[0,8]")), "non-negative integer"},
      {"HugeDim", one(entry(R"("F32")", "[18446744073709551615]", "[0,8]")), "non-negative integer"},
      {"NumelOverflow", one(entry(R"("F32")", "[4294967296,4294967296]", "[0,8]")), "numel overflow"},
      {"NumelOverflow3", one(entry(R"("U8")", "[2097152,2097152,2097152]", "[0,8]")), "numel overflow"},
      {"NbytesOverflow", one(entry(R"("I64")", "[4611686018427387904]", "[0,8]")), "numel overflow"},
      {"OffsetsNotArray", one(entry(R"("F32")", "[2]", "8")), "data_offsets"},
      {"OffsetsOne", one(entry(R"("F32")", "[2]", "[8]")), "data_offsets"},
      {"OffsetsThree", one(entry(R"("F32")", "[2]", "[0,8,16]")), "data_offsets"},
      {"OffsetsNegative", one(entry(R"("F32")", "[2]", "[-8,0]")), "data_offsets"},
      {"OffsetsFloat", one(entry(R"("F32")", "[2]", "[0,8.0]")), "data_offsets"},
      {"OffsetsStrings", one(entry(R"("F32")", "[2]", R"(["0","8"])")), "data_offsets"},
      {"OffsetsReversed", one(entry(R"("F32")", "[0]", "[8,0]")), "data_offsets"},
      {"OffsetsHuge", one(entry(R"("U8")", "[1]", "[18446744073709551614,18446744073709551615]")), "data_offsets"},
      {"ShapeOffsetMismatch", one(entry(R"("F32")", "[2]", "[0,4]")), "shape/offset mismatch"},
      {"ShapeOffsetMismatchEmpty", one(entry(R"("F32")", "[0]", "[0,4]")), "shape/offset mismatch"},
      {"ScalarMismatch", one(entry(R"("F32")", "[]", "[0,8]")), "shape/offset mismatch"},
      {"OffsetsPastEnd", one(ok, 7), "past the end of the data section"},
      {"EmptyTensorPastEnd", one(entry(R"("F32")", "[0]", "[65,65]")), "past the end of the data section"},
      {"Overlap", make_file_bytes(R"({"a":)" + ok + R"(,"b":)" + entry(R"("F32")", "[2]", "[4,12]") + "}", 16),
       "overlap"},
      {"OverlapSame", make_file_bytes(R"({"a":)" + ok + R"(,"b":)" + entry(R"("U8")", "[8]", "[0,8]") + "}", 16),
       "overlap"},
      {"OverlapInside",
       make_file_bytes(
           R"({"a":)" + entry(R"("U8")", "[16]", "[0,16]") + R"(,"b":)" + entry(R"("U8")", "[2]", "[4,6]") + "}", 16),
       "overlap"},
      {"DuplicateName", make_file_bytes(R"({"a":)" + ok + R"(,"a":)" + entry(R"("F32")", "[2]", "[8,16]") + "}", 16),
       "duplicate tensor name 'a'"},
      {"DuplicateMetadata", make_file_bytes(R"({"__metadata__":{},"__metadata__":{}})", 0),
       "duplicate key '__metadata__'"},
      {"DuplicateMetadataKey", make_file_bytes(R"({"__metadata__":{"k":"1","k":"2"}})", 0), "duplicate key 'k'"},
      {"MetadataNotObject", make_file_bytes(R"({"__metadata__":"x"})", 0), "__metadata__"},
      {"MetadataArray", make_file_bytes(R"({"__metadata__":["x"]})", 0), "__metadata__"},
      {"MetadataNumberValue", make_file_bytes(R"({"__metadata__":{"k":1}})", 0), "__metadata__"},
      {"MetadataNestedValue", make_file_bytes(R"({"__metadata__":{"k":{"a":"b"}}})", 0), "__metadata__"},
  };
}

class SafetensorsReject : public SafetensorsTest, public ::testing::WithParamInterface<RejectCase> {};

TEST_P(SafetensorsReject, ThrowsErrorNamingFileAndProblem) {
  const RejectCase& c = GetParam();
  const std::string path = file(std::string(c.name) + ".safetensors");
  write_bytes(path, c.bytes);
  try {
    SafetensorsFile f = SafetensorsFile::open(path);
    FAIL() << "accepted a bad file; " << f.tensors().size() << " tensors";
  } catch (const lorq::Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << "message: " << msg << "\nexpected to contain: " << c.expect;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, SafetensorsReject, ::testing::ValuesIn(reject_cases()),
                         [](const ::testing::TestParamInfo<RejectCase>& info) { return info.param.name; });

TEST_F(SafetensorsTest, DeepNestingAndHugeTokensAreRejectedCleanly) {
  const size_t depth = 200'000;
  const std::string path = file("deep.safetensors");
  write_bytes(path, make_file_bytes(std::string(depth, '[') + std::string(depth, ']'), 0));
  EXPECT_THROW(SafetensorsFile::open(path), lorq::Error);
  write_bytes(path, make_file_bytes("{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}", 0));
  EXPECT_THROW(SafetensorsFile::open(path), lorq::Error);
  // An unterminated 5 MB string: the message stays short.
  write_bytes(path, make_file_bytes("{\"" + std::string(5'000'000, 'x'), 0));
  try {
    SafetensorsFile::open(path);
    FAIL();
  } catch (const lorq::Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 1000u);
    EXPECT_NE(std::string(e.what()).find("invalid JSON"), std::string::npos);
  }
}

TEST_F(SafetensorsTest, OpenMissingFileOrDirectory) {
  const std::string missing = file("missing.safetensors");
  try {
    SafetensorsFile::open(missing);
    FAIL();
  } catch (const lorq::Error& e) {
    EXPECT_NE(std::string(e.what()).find(missing), std::string::npos);
  }
  try {
    SafetensorsFile::open(dir_.string());
    FAIL();
  } catch (const lorq::Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir_.string()), std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// writer validation and atomicity

TEST_F(SafetensorsTest, WriterRejectsBadInputAndLeavesExistingFileUntouched) {
  const std::string path = file("keep.safetensors");
  const std::vector<float> v = {1, 2, 3, 4};
  lorq::write_safetensors(path, {{"w", DType::F32, {4}, v.data(), 16}}, {{"k", "v"}});
  const std::string before = read_bytes(path);

  auto expect_fail = [&](const std::vector<TensorToWrite>& tw, const char* what) {
    try {
      lorq::write_safetensors(path, tw);
      ADD_FAILURE() << "expected lorq::Error containing " << what;
    } catch (const lorq::Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_NE(msg.find(what), std::string::npos) << msg;
    }
    EXPECT_EQ(read_bytes(path), before);
    EXPECT_EQ(listing(), std::vector<std::string>{"keep.safetensors"});
  };
  expect_fail({{"a", DType::F32, {4}, v.data(), 16}, {"a", DType::F32, {4}, v.data(), 16}}, "duplicate tensor name");
  expect_fail({{"a", DType::F32, {4}, v.data(), 12}}, "nbytes");
  expect_fail({{"a", DType::F16, {4}, v.data(), 16}}, "nbytes");
  expect_fail({{"a", DType::F32, {-4}, v.data(), 16}}, "negative");
  expect_fail({{"a", DType::U8, {INT64_MAX, 2}, v.data(), 16}}, "overflow");
  expect_fail({{"a", DType::F32, {4}, nullptr, 16}}, "null");
  expect_fail({{"__metadata__", DType::F32, {4}, v.data(), 16}}, "reserved");
  expect_fail({{"bad\xff utf8", DType::F32, {4}, v.data(), 16}}, "JSON");
  EXPECT_EQ(SafetensorsFile::open(path).metadata().at("k"), "v");
}

TEST_F(SafetensorsTest, WriteIntoMissingDirectoryFails) {
  const std::string path = file("no/such/dir/x.safetensors");
  const std::vector<float> v = {1};
  try {
    lorq::write_safetensors(path, {{"w", DType::F32, {1}, v.data(), 4}});
    FAIL();
  } catch (const lorq::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
  }
  EXPECT_TRUE(listing().empty());
}

TEST_F(SafetensorsTest, FailedRenameRemovesTempFile) {
  // The target is a non-empty directory: the temp file is written and synced, then the rename fails.
  const std::string path = file("target.safetensors");
  fs::create_directory(path);
  write_bytes(path + "/inside", "x");
  const std::vector<float> v = {1, 2};
  try {
    lorq::write_safetensors(path, {{"w", DType::F32, {2}, v.data(), 8}});
    FAIL();
  } catch (const lorq::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("rename"), std::string::npos) << e.what();
  }
  EXPECT_EQ(listing(), std::vector<std::string>{"target.safetensors"});
  EXPECT_TRUE(fs::is_directory(path));
  EXPECT_EQ(read_bytes(path + "/inside"), "x");
}

TEST_F(SafetensorsTest, OverwriteReplacesAtomically) {
  const std::string path = file("w.safetensors");
  const std::vector<float> a = {1, 2, 3};
  const std::vector<int32_t> b = {7, 8};
  lorq::write_safetensors(path, {{"a", DType::F32, {3}, a.data(), 12}});
  SafetensorsFile old_file = SafetensorsFile::open(path);  // keeps the old inode mapped
  lorq::write_safetensors(path, {{"b", DType::I32, {2}, b.data(), 8}});
  EXPECT_EQ(listing(), std::vector<std::string>{"w.safetensors"});
  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.find("a"), nullptr);
  EXPECT_EQ(f.to_f32(f.at("b")), (std::vector<float>{7, 8}));
  // The earlier mapping still sees the old contents (rename, not overwrite in place).
  EXPECT_EQ(old_file.to_f32(old_file.at("a")), a);
}

}  // namespace
