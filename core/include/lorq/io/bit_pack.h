#pragma once
// Bit packing of quantization codes (export format version 2).
//
// A [rows, cols] matrix of b-bit codes (1 <= b <= 8, each code < 2^b) is stored row by row; every row is a
// little-endian bit stream padded with zero bits to a whole number of bytes:
//   code j of a row occupies the row's bits j·b .. j·b + b − 1, least significant bit first, where bit k of the
//   row is bit (k mod 8) of byte (k div 8) of that row.
// So at 4 bits code 2j is the low nibble and code 2j+1 the high nibble of byte j (ONNX's INT4/UINT4 order), at
// 8 bits the packing is the identity, and a row of c codes takes ceil(c·b / 8) bytes.
//
// Standard library only, so the sanitizer fuzz test and the workbench can use it.
#include <cstddef>
#include <cstdint>

namespace lorq {

// Bytes of one packed row of `cols` codes at `bits` bits: ceil(cols·bits / 8). Throws lorq::Error for bits
// outside 1..8 or a negative cols.
size_t packed_row_bytes(int64_t cols, int bits);

// Packs codes [rows, cols] (one code per byte, row-major) into out (rows · packed_row_bytes(cols, bits) bytes).
// Throws lorq::Error when a code does not fit in `bits` bits.
void pack_codes(const uint8_t* codes, int64_t rows, int64_t cols, int bits, uint8_t* out);

// The inverse: reads rows · packed_row_bytes(cols, bits) bytes from `packed` and writes rows·cols codes to out.
// Throws lorq::Error when packed_size is not exactly that many bytes or a row's padding bits are not zero (a
// packed tensor of another bit width or shape would otherwise decode silently to garbage).
void unpack_codes(const uint8_t* packed, size_t packed_size, int64_t rows, int64_t cols, int bits, uint8_t* out);

}  // namespace lorq
