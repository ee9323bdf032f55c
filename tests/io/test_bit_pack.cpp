// Bit packing of export codes against a slow, obviously correct reference: an explicit list of bits.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/io/bit_pack.h"

using namespace lorq;

namespace {

// The documented order, spelled out: the row is a list of bits, each code appended least significant bit
// first; the list is cut into bytes of 8 bits, the first bit of a byte being its bit 0; the last byte is
// padded with zeros.
std::vector<uint8_t> reference_pack(const std::vector<uint8_t>& codes, int64_t rows, int64_t cols, int bits) {
  std::vector<uint8_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int> stream;
    for (int64_t j = 0; j < cols; ++j)
      for (int k = 0; k < bits; ++k) stream.push_back((codes[r * cols + j] >> k) & 1);
    while (stream.size() % 8) stream.push_back(0);
    for (size_t i = 0; i < stream.size(); i += 8) {
      int byte = 0;
      for (int k = 0; k < 8; ++k) byte += stream[i + k] << k;
      out.push_back(static_cast<uint8_t>(byte));
    }
  }
  return out;
}

}  // namespace

TEST(BitPack, MatchesTheReferenceOnRandomShapes) {
  std::mt19937 rng(7);
  for (int bits : {1, 2, 3, 4, 5, 6, 7, 8}) {
    for (int trial = 0; trial < 25; ++trial) {
      const int64_t rows = rng() % 7, cols = rng() % 41;  // odd sizes and empty ones
      std::vector<uint8_t> codes(rows * cols);
      for (uint8_t& c : codes) c = static_cast<uint8_t>(rng() % (1u << bits));
      const std::vector<uint8_t> expected = reference_pack(codes, rows, cols, bits);
      ASSERT_EQ(expected.size(), rows * packed_row_bytes(cols, bits));
      std::vector<uint8_t> packed(expected.size() + 1, 0xAB);  // a guard byte after the end
      pack_codes(codes.data(), rows, cols, bits, packed.data());
      EXPECT_EQ(packed.back(), 0xAB) << "wrote past the end";
      packed.pop_back();
      ASSERT_EQ(packed, expected) << bits << " bits, " << rows << "x" << cols;
      std::vector<uint8_t> back(codes.size());
      unpack_codes(packed.data(), packed.size(), rows, cols, bits, back.data());
      EXPECT_EQ(back, codes);
    }
  }
}

TEST(BitPack, DocumentedExamples) {
  // 4 bits: code 2j in the low nibble of byte j (ONNX's order); 3 bits: 0b101, 0b011, 0b111 -> bits
  // 1,0,1, 1,1,0, 1,1,1 -> bytes 0b11011101, 0b00000001.
  const std::vector<uint8_t> four = {0x1, 0x2, 0xF};
  std::vector<uint8_t> p(2);
  pack_codes(four.data(), 1, 3, 4, p.data());
  EXPECT_EQ(p, (std::vector<uint8_t>{0x21, 0x0F}));
  const std::vector<uint8_t> three = {5, 3, 7};
  pack_codes(three.data(), 1, 3, 3, p.data());
  EXPECT_EQ(p, (std::vector<uint8_t>{0xDD, 0x01}));
}

TEST(BitPack, RejectsBadInput) {
  const std::vector<uint8_t> codes = {1, 2, 3, 4};
  std::vector<uint8_t> out(4);
  EXPECT_THROW(pack_codes(codes.data(), 1, 4, 2, out.data()), Error);  // 4 does not fit in 2 bits
  EXPECT_THROW(packed_row_bytes(3, 0), Error);
  EXPECT_THROW(packed_row_bytes(3, 9), Error);
  std::vector<uint8_t> packed(2);
  pack_codes(codes.data(), 1, 4, 3, packed.data());
  EXPECT_THROW(unpack_codes(packed.data(), 1, 1, 4, 3, out.data()), Error);  // truncated
  EXPECT_THROW(unpack_codes(packed.data(), 2, 2, 4, 3, out.data()), Error);  // a row missing
  packed[1] |= 0x80;                                                         // a padding bit set
  EXPECT_THROW(unpack_codes(packed.data(), 2, 1, 4, 3, out.data()), Error);
}
