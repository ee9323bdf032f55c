#pragma once
// Where the bytes of an export go, next to the budget (shown by `lorq compress --out` and the workbench's export
// report). Computed from the export folder itself (lorq-config.json and the safetensors header), so it describes
// the file as written. Torch-free: the UI includes this header.
#include <cstdint>
#include <string>

namespace lorq {

struct ExportSizeBreakdown {
  int format_version = 0;
  int64_t budget_bytes = 0;            // the allocation's budget
  int64_t budget_code_bytes = 0;       // the budget's accounting of the quantized and low-rank layers' codes
  int64_t code_bytes = 0;              // those codes as stored (bit-packed from version 2)
  int64_t param_bytes = 0;             // their per-row scales and zero-points, plus activation quantizers
  int64_t float_layer_bytes = 0;       // compressible layers kept in float32 (the budget counts them too)
  int64_t float_other_bytes = 0;       // everything else kept as in the checkpoint: embeddings, norms, biases, ...
  int64_t header_bytes = 0;            // the safetensors header (names, shapes, metadata)
  int64_t file_bytes = 0;              // compressed.safetensors on disk: the sum of the five parts above
  int64_t float_checkpoint_bytes = 0;  // the same model with every parameter in float32
};

// Throws lorq::Error naming the file when the folder is not a readable lorq export.
ExportSizeBreakdown export_size_breakdown(const std::string& export_dir);

// A few aligned lines ("packed codes   2,812,160 B (budget accounting 2,812,160 B)" ...), ending in a newline.
std::string format_export_size(const ExportSizeBreakdown& s);

// format_export_size(export_size_breakdown(dir)), or one line naming the problem when the folder cannot be read
// (for reports, which should not fail over it). Never throws.
std::string export_size_report(const std::string& export_dir) noexcept;

}  // namespace lorq
