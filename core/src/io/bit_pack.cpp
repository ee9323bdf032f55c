#include "lorq/io/bit_pack.h"

#include <string>

#include "lorq/common/error.h"

namespace lorq {

size_t packed_row_bytes(int64_t cols, int bits) {
  if (bits < 1 || bits > 8) throw Error("bit packing: " + std::to_string(bits) + " bits is outside 1..8");
  if (cols < 0) throw Error("bit packing: negative row length");
  return static_cast<size_t>((cols * bits + 7) / 8);
}

void pack_codes(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  const size_t row_bytes = packed_row_bytes(cols, bits);
  const unsigned limit = 1u << bits;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* in = codes + r * cols;
    uint8_t* dst = out + static_cast<size_t>(r) * row_bytes;
    // A 32-bit accumulator: at most 7 pending bits plus one 8-bit code.
    uint32_t acc = 0;
    int filled = 0;
    size_t o = 0;
    for (int64_t j = 0; j < cols; ++j) {
      if (in[j] >= limit)
        throw Error("bit packing: code " + std::to_string(in[j]) + " does not fit in " + std::to_string(bits) +
                    " bits");
      acc |= uint32_t(in[j]) << filled;
      filled += bits;
      while (filled >= 8) {
        dst[o++] = static_cast<uint8_t>(acc & 0xff);
        acc >>= 8;
        filled -= 8;
      }
    }
    if (filled > 0) dst[o++] = static_cast<uint8_t>(acc);
  }
}

void unpack_codes(const uint8_t* packed, size_t packed_size, int64_t rows, int64_t cols, int bits, uint8_t* out) {
  const size_t row_bytes = packed_row_bytes(cols, bits);
  if (rows < 0) throw Error("bit packing: negative row count");
  if (packed_size != static_cast<size_t>(rows) * row_bytes)
    throw Error("packed codes hold " + std::to_string(packed_size) + " bytes, but " + std::to_string(rows) +
                " rows of " + std::to_string(cols) + " codes at " + std::to_string(bits) + " bits need " +
                std::to_string(static_cast<size_t>(rows) * row_bytes));
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* src = packed + static_cast<size_t>(r) * row_bytes;
    uint8_t* dst = out + r * cols;
    uint32_t acc = 0;
    int filled = 0;
    size_t i = 0;
    for (int64_t j = 0; j < cols; ++j) {
      while (filled < bits) {
        acc |= uint32_t(src[i++]) << filled;
        filled += 8;
      }
      dst[j] = static_cast<uint8_t>(acc & mask);
      acc >>= bits;
      filled -= bits;
    }
    // The bits left over in the last byte are padding and must be zero.
    if (acc != 0 || (i < row_bytes))
      throw Error("packed codes: row " + std::to_string(r) +
                  " has non-zero padding bits (another bit width or shape?)");
  }
}

}  // namespace lorq
