#pragma once
// ONNX export of a lorq export folder (classifiers: timm ViT/DeiT), for standard runtimes (ONNX Runtime).
//
// The graph (opset 21, IR version 10) takes "pixel_values" [batch, C, H, W] (preprocessed as `lorq eval` does) and
// gives "logits" [batch, classes]. Every quantized layer keeps its integer codes: an initializer of the
// transposed codes Wᵀ [in, out] in UINT4 (codes of 4 bits and fewer, two per byte as ONNX packs them) or UINT8,
// a DequantizeLinear with the per-row scale and zero-point (axis 1) feeding a MatMul. A low-rank layer
// W ≈ A·B is x·Bᵀ·Aᵀ: two such matmuls (rank r in between). DequantizeLinear computes (code − z)·Δ in float32,
// the product's own dequantization, so the weights are bit-identical; only the order of the float sums (and, for
// low rank, the two matmuls instead of one by A·B) differs. A row whose zero-point does not fit the codes' type
// (a row entirely above or below zero) makes that tensor INT32 codes minus zero-points with a zero zero-point.
// Layers kept in float are float initializers; everything else (embeddings, norms, biases) as in the export.
// Activation quantizers (an export made with --act-bits) sit where the product applies them: uniform ones with
// integer zero-points as QuantizeLinear/DequantizeLinear pairs, the others (fractional zero-points after LayerNorm
// folding, log√2 on softmax outputs) as the same arithmetic in elementary operators.
// Written with Debian's libonnx/protobuf; the file is written under a temporary name and renamed.
#include <cstdint>
#include <string>

namespace lorq {

struct OnnxExportSummary {
  int64_t file_bytes = 0;
  int quantized_layers = 0, low_rank_layers = 0, float_layers = 0;
  int64_t uint4_bytes = 0, uint8_bytes = 0, int32_bytes = 0;  // code initializers by type
  int activation_qdq = 0;          // activation quantizers as QuantizeLinear/DequantizeLinear pairs
  int activation_elementwise = 0;  // ... as elementary operators (fractional zero-points, log√2)
};

// True when this build includes the ONNX writer (Debian's libonnx-dev was found).
bool onnx_export_available();

// Reads the export folder (lorq-config.json, compressed.safetensors, config.json) and writes `out_path`.
// Throws lorq::Error naming the file: not a lorq export, or an inconsistent one.
OnnxExportSummary export_onnx(const std::string& export_dir, const std::string& out_path);

}  // namespace lorq
