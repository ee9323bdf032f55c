#pragma once
// Reading the quantized groups of a lorq export (compressed.safetensors), without LibTorch, so that the
// AddressSanitizer fuzz test exercises exactly the code the model loader runs.
//
// Format versions ("lorq_format_version" in the safetensors metadata, "version" in lorq-config.json):
//   1  one byte per code: "<p>.codes" U8 [rows, cols], "<p>.scale" and "<p>.zero_point" F32 [rows], "<p>.bits".
//   2  bit-packed (lorq/io/bit_pack.h): "<p>.codes" U8 [R, ceil(C·bits/8)] where [R, C] is the stored orientation;
//      metadata "<p>.bits", "<p>.shape" (the matrix's logical [rows, cols] as JSON) and "<p>.layout": "rows"
//      (stored as is) or "columns" (stored transposed: the low-rank factor A [m, r] is written as A^T [r, m], so
//      that each stored row holds m codes and the packed bytes equal the budget's r·(m·b_A + n·b_B)/8 whenever
//      m·b_A and n·b_B are whole bytes, as in every ViT, instead of padding every one of A's m short rows).
//      "<p>.scale" F32 [rows]: Δ is computed in float32 and the dequantization Δ·(code − z) multiplies by exactly
//      that float, so any narrower type would change the reloaded weights. "<p>.zero_point" [rows]: integers,
//      U8 when every one lies in 0..255 (the usual case, a row spanning zero), F32 otherwise (a row entirely
//      above or below zero has z outside the code range); both hold z exactly.
// The prefix p is "<layer>.weight" (quantized layer) or "<layer>.lowrank_a" / "<layer>.lowrank_b" (low rank).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lorq/io/safetensors.h"

namespace lorq {

constexpr int kExportFormatVersion = 2;  // what export_compressed writes
constexpr int kOldestExportFormatVersion = 1;

// The export format version of a checkpoint's metadata: 0 for an ordinary (non-lorq) checkpoint. Throws
// lorq::Error naming `source` and the version for a lorq export of a version this build cannot read.
int export_format_version(const std::map<std::string, std::string>& metadata, const std::string& source);

// Checks "version" of a lorq-config.json (throws lorq::Error naming the file and the version when unknown).
// Returns the version.
int check_lorq_config_version(const std::string& lorq_config_path);

// One per-row quantized matrix, unpacked and validated.
struct QuantGroup {
  std::string prefix;
  int bits = 0;
  int64_t rows = 0, cols = 0;
  std::vector<uint8_t> codes;     // rows·cols codes, row-major, each < 2^bits
  std::vector<float> scale;       // [rows], finite and > 0
  std::vector<float> zero_point;  // [rows], integer-valued
};

// The prefixes of every quantized group in the file (names ending in ".codes"), sorted.
std::vector<std::string> quant_group_prefixes(const SafetensorsFile& file);

// Reads and validates one group of a version-`version` export. Every inconsistency (missing tensor or metadata,
// wrong dtype, a bit width outside 1..8, codes whose size does not match the recorded shape and bits, codes out
// of range, non-zero padding, scales that are not positive and finite, zero-points that are not integers) throws
// lorq::Error "<file>: '<prefix>': <problem>".
QuantGroup read_quant_group(const SafetensorsFile& file, const std::string& prefix, int version);

}  // namespace lorq
