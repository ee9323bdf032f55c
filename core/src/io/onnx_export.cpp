#include "lorq/io/onnx_export.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "lorq/common/error.h"
#include "lorq/common/file_util.h"
#include "lorq/io/bit_pack.h"
#include "lorq/io/packed_export.h"
#include "lorq/io/safetensors.h"
#include "lorq/models/vit_config.h"

#ifdef LORQ_HAVE_ONNX
#include <onnx/onnx_pb.h>
#endif

namespace lorq {

#ifndef LORQ_HAVE_ONNX

bool onnx_export_available() { return false; }

OnnxExportSummary export_onnx(const std::string&, const std::string& out_path) {
  throw Error(out_path, "this build has no ONNX writer (install libonnx-dev, see scripts/setup, and rebuild)");
}

#else

bool onnx_export_available() { return true; }

namespace {

// TensorProto.data_type values (a plain int32 in the proto, so libonnx 1.12 can write UINT4, added in 1.16).
enum OnnxType : int { kFloat = 1, kUint8 = 2, kInt32 = 6, kInt64 = 7, kUint4 = 21 };

class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  // Adds a node and returns its (single) output's name.
  std::string op(const std::string& type, const std::vector<std::string>& inputs, const std::string& hint,
                 const std::function<void(onnx::NodeProto*)>& attrs = {}) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(type);
    const std::string out = hint + "/" + type + "_" + std::to_string(counter_++);
    n->set_name(out);
    for (const std::string& i : inputs) n->add_input(i);
    n->add_output(out);
    if (attrs) attrs(n);
    return out;
  }
  std::string init(const std::string& name, int type, const std::vector<int64_t>& dims, const void* data,
                   size_t bytes) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(data, bytes);
    return name;
  }
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& v) {
    return init(name, kFloat, dims, v.data(), v.size() * sizeof(float));
  }
  std::string ints(const std::vector<int64_t>& v, bool scalar = false) {
    const std::string name = "const_i64_" + std::to_string(counter_++);
    std::vector<int64_t> dims;
    if (!scalar) dims.push_back(static_cast<int64_t>(v.size()));
    return init(name, kInt64, dims, v.data(), v.size() * sizeof(int64_t));
  }

 private:
  onnx::GraphProto* g_;
  int counter_ = 0;
};

void set_int(onnx::NodeProto* n, const char* name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}
void set_float(onnx::NodeProto* n, const char* name, float v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::FLOAT);
  a->set_f(v);
}
void set_ints(onnx::NodeProto* n, const char* name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}
void set_string(onnx::NodeProto* n, const char* name, const std::string& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(v);
}

class ViTWriter {
 public:
  ViTWriter(const std::string& dir, onnx::GraphProto* g, OnnxExportSummary* summary)
      : file_(SafetensorsFile::open((std::filesystem::path(dir) / "compressed.safetensors").string())),
        b_(g),
        summary_(summary) {
    namespace fs = std::filesystem;
    const std::string cfg_path = (fs::path(dir) / "lorq-config.json").string();
    check_lorq_config_version(cfg_path);
    version_ = export_format_version(file_.metadata(), file_.path());
    if (version_ == 0) throw Error(file_.path(), "not a lorq export");
    if (file_.metadata().count("lraqvit.act_bits"))
      throw Error(file_.path(),
                  "LRA-QViT's dynamic per-token activation quantization has no ONNX form yet (export it weight-only: "
                  "lorq lraqvit --act-bits 0)");
    read_activation_quantizers();
    std::map<std::string, std::vector<int64_t> > shapes;
    for (const TensorInfo& t : file_.tensors()) shapes[t.name] = t.shape;
    std::ifstream in(cfg_path);
    try {
      const nlohmann::json cfg = nlohmann::json::parse(in);
      for (const auto& l : cfg.at("layers")) {
        const std::string name = l.at("name").get<std::string>();
        kinds_[name] = l.at("kind").get<std::string>();
        shapes[name + ".weight"] = l.at("checkpoint_shape").get<std::vector<int64_t> >();
      }
    } catch (const nlohmann::json::exception& e) {
      throw Error(cfg_path, std::string("not a lorq export configuration (") + e.what() + ")");
    }
    const std::string model_cfg = (fs::path(dir) / "config.json").string();
    if (!fs::exists(model_cfg)) throw Error(model_cfg, "missing (the export's model configuration)");
    c_ = read_vit_config(model_cfg);
    complete_vit_config(c_, shapes, file_.path());
  }

  void write(onnx::GraphProto* g) {
    const int64_t C = c_.in_chans, P = c_.patch_size, S = c_.img_size, grid = S / P, D = c_.embed_dim;
    const int64_t H = c_.num_heads, hd = D / H, prefix = c_.class_token ? 1 : 0;
    auto* in = g->add_input();
    in->set_name("pixel_values");
    auto* it = in->mutable_type()->mutable_tensor_type();
    it->set_elem_type(kFloat);
    it->mutable_shape()->add_dim()->set_dim_param("batch");
    for (int64_t d : {C, S, S}) it->mutable_shape()->add_dim()->set_dim_value(d);

    // Patches flattened in (c, kh, kw) order, as the engine's linear patch embedding reads them.
    std::string x = b_.op("Reshape", {"pixel_values", b_.ints({-1, C, grid, P, grid, P})}, "patch_embed");
    x = b_.op("Transpose", {x}, "patch_embed", [](auto* n) { set_ints(n, "perm", {0, 2, 4, 1, 3, 5}); });
    x = b_.op("Reshape", {x, b_.ints({-1, grid * grid, C * P * P})}, "patch_embed");
    x = linear("patch_embed.proj", x);
    if (c_.class_token) {
      const std::string batch = b_.op("Shape", {x}, "cls", [](auto* n) {
        set_int(n, "start", 0);
        set_int(n, "end", 1);
      });
      const std::string shape =
          b_.op("Concat", {batch, b_.ints({1, D})}, "cls", [](auto* n) { set_int(n, "axis", 0); });
      const std::string cls = b_.op("Expand", {float_tensor("cls_token"), shape}, "cls");
      x = b_.op("Concat", {cls, x}, "cls", [](auto* n) { set_int(n, "axis", 1); });
    }
    x = b_.op("Add", {x, float_tensor("pos_embed")}, "pos_embed");
    const std::vector<float> q_scale = {static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)))};
    const std::string q_scale_name = b_.floats("attn_q_scale", {}, q_scale);
    for (int i = 0; i < c_.depth; ++i) {
      const std::string p = "blocks." + std::to_string(i) + ".";
      std::string h = act(p + "norm1.out", layer_norm(p + "norm1", x));
      std::string qkv = linear(p + "attn.qkv", h);
      qkv = b_.op("Reshape", {qkv, b_.ints({0, 0, 3, H, hd})}, p + "attn");
      qkv = b_.op("Transpose", {qkv}, p + "attn", [](auto* n) { set_ints(n, "perm", {2, 0, 3, 1, 4}); });
      auto part = [&](int64_t k) {
        return b_.op("Gather", {qkv, b_.ints({k}, true)}, p + "attn", [](auto* n) { set_int(n, "axis", 0); });
      };
      const std::string q = act(p + "attn.q", b_.op("Mul", {part(0), q_scale_name}, p + "attn"));
      const std::string kt = b_.op("Transpose", {act(p + "attn.k", part(1))}, p + "attn", [](auto* n) {
        set_ints(n, "perm", {0, 1, 3, 2});
      });
      std::string attn = b_.op("MatMul", {q, kt}, p + "attn");
      attn = act(p + "attn.softmax", b_.op("Softmax", {attn}, p + "attn", [](auto* n) { set_int(n, "axis", -1); }));
      std::string o = b_.op("MatMul", {attn, act(p + "attn.v", part(2))}, p + "attn");
      o = b_.op("Transpose", {o}, p + "attn", [](auto* n) { set_ints(n, "perm", {0, 2, 1, 3}); });
      o = act(p + "attn.proj.in", b_.op("Reshape", {o, b_.ints({0, 0, D})}, p + "attn"));
      x = b_.op("Add", {x, linear(p + "attn.proj", o)}, p + "attn");
      h = act(p + "norm2.out", layer_norm(p + "norm2", x));
      h = act(p + "mlp.fc2.in", b_.op("Gelu", {linear(p + "mlp.fc1", h)}, p + "mlp",
                                      [](auto* n) { set_string(n, "approximate", "none"); }));
      x = b_.op("Add", {x, linear(p + "mlp.fc2", h)}, p + "mlp");
    }
    std::string pooled;
    if (c_.global_pool == "avg") {
      std::string t = c_.fc_norm ? x : layer_norm("norm", x);
      t = b_.op("Slice", {t, b_.ints({prefix}), b_.ints({std::numeric_limits<int64_t>::max()}), b_.ints({1})}, "pool");
      pooled = b_.op("ReduceMean", {t, b_.ints({1})}, "pool", [](auto* n) { set_int(n, "keepdims", 0); });
      if (c_.fc_norm) pooled = layer_norm("fc_norm", pooled);
    } else {
      pooled =
          b_.op("Gather", {layer_norm("norm", x), b_.ints({0}, true)}, "pool", [](auto* n) { set_int(n, "axis", 1); });
    }
    const std::string logits = linear("head", act("head.in", pooled));
    for (const auto& [point, q] : act_)
      if (!q.used) throw Error(file_.path(), "activation quantizer '" + point + "' is at no point of the graph");
    onnx::NodeProto* id = g->add_node();
    id->set_op_type("Identity");
    id->set_name("logits");
    id->add_input(logits);
    id->add_output("logits");
    auto* out = g->add_output();
    out->set_name("logits");
    auto* ot = out->mutable_type()->mutable_tensor_type();
    ot->set_elem_type(kFloat);
    ot->mutable_shape()->add_dim()->set_dim_param("batch");
    ot->mutable_shape()->add_dim()->set_dim_value(c_.num_classes);
  }

 private:
  std::string float_tensor(const std::string& name) {
    auto done = added_.find(name);
    if (done != added_.end()) return name;
    const TensorInfo& t = file_.at(name);
    b_.floats(name, t.shape, file_.to_f32(t));
    added_.insert(name);
    return name;
  }

  std::string layer_norm(const std::string& name, const std::string& x) {
    const std::string w = float_tensor(name + ".weight"), bias = float_tensor(name + ".bias");
    return b_.op("LayerNormalization", {x, w, bias}, name, [&](auto* n) {
      set_int(n, "axis", -1);
      set_float(n, "epsilon", static_cast<float>(c_.norm_eps));
    });
  }

  // Kᵀ [cols, rows] = DequantizeLinear(codesᵀ, scale [rows], zero_point [rows], axis 1): the matmul's right side.
  std::string dequantized_transpose(const std::string& prefix) {
    const QuantGroup g = read_quant_group(file_, prefix, version_);
    const int64_t rows = g.rows, cols = g.cols, n = rows * cols;
    const bool four = g.bits <= 4;
    const float zmax = four ? 15.f : 255.f;
    bool fits = true;
    for (float z : g.zero_point) fits = fits && z >= 0 && z <= zmax;
    const std::string codes = prefix + ".codes", scale = prefix + ".scale", zero = prefix + ".zero_point";
    b_.floats(scale, {rows}, g.scale);
    std::vector<std::string> inputs = {codes, scale};
    if (fits) {
      std::vector<uint8_t> t(n), z(g.zero_point.begin(), g.zero_point.end());
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = g.codes[i * cols + j];
      if (four) {
        // ONNX packs 4-bit tensors flattened, element 2k in the low nibble: one row of the lorq bit order.
        std::vector<uint8_t> packed(packed_row_bytes(n, 4)), zp(packed_row_bytes(rows, 4));
        pack_codes(t.data(), 1, n, 4, packed.data());
        pack_codes(z.data(), 1, rows, 4, zp.data());
        b_.init(codes, kUint4, {cols, rows}, packed.data(), packed.size());
        b_.init(zero, kUint4, {rows}, zp.data(), zp.size());
        summary_->uint4_bytes += static_cast<int64_t>(packed.size());
      } else {
        b_.init(codes, kUint8, {cols, rows}, t.data(), t.size());
        b_.init(zero, kUint8, {rows}, z.data(), z.size());
        summary_->uint8_bytes += n;
      }
      inputs.push_back(zero);
    } else {
      // A zero-point outside the codes' range: exact integers code − z in INT32, which DequantizeLinear takes
      // without a zero-point.
      std::vector<int32_t> t(n);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j)
          t[j * rows + i] = static_cast<int32_t>(g.codes[i * cols + j]) - static_cast<int32_t>(g.zero_point[i]);
      b_.init(codes, kInt32, {cols, rows}, t.data(), t.size() * sizeof(int32_t));
      summary_->int32_bytes += 4 * n;
    }
    return b_.op("DequantizeLinear", inputs, prefix, [](auto* nd) { set_int(nd, "axis", 1); });
  }

  std::string linear(const std::string& layer, const std::string& x) {
    auto kind = kinds_.find(layer);
    std::string y;
    if (kind != kinds_.end() && kind->second == "quant") {
      y = b_.op("MatMul", {x, dequantized_transpose(layer + ".weight")}, layer);
      ++summary_->quantized_layers;
    } else if (kind != kinds_.end() && kind->second == "low_rank") {
      y = b_.op("MatMul", {x, dequantized_transpose(layer + ".lowrank_b")}, layer);
      y = b_.op("MatMul", {y, dequantized_transpose(layer + ".lowrank_a")}, layer);
      ++summary_->low_rank_layers;
    } else {
      const TensorInfo& t = file_.at(layer + ".weight");
      const std::vector<float> w = file_.to_f32(t);
      const int64_t m = t.shape.at(0), n = static_cast<int64_t>(w.size()) / std::max<int64_t>(m, 1);
      std::vector<float> wt(w.size());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) wt[j * m + i] = w[i * n + j];
      y = b_.op("MatMul", {x, b_.floats(layer + ".weight_t", {n, m}, wt)}, layer);
      ++summary_->float_layers;
    }
    if (file_.find(layer + ".bias")) y = b_.op("Add", {y, float_tensor(layer + ".bias")}, layer);
    return y;
  }

  struct ActQuant {
    std::string type;  // per_tensor | per_channel | log_sqrt2
    int bits = 8;
    std::vector<float> scale, zero_point;
    bool used = false;
  };

  void read_activation_quantizers() {
    const std::string head = "activation.", tail = ".scale";
    for (const TensorInfo& t : file_.tensors()) {
      if (t.name.rfind(head, 0) != 0 || t.name.size() <= head.size() + tail.size() ||
          t.name.compare(t.name.size() - tail.size(), tail.size(), tail) != 0)
        continue;
      const std::string point = t.name.substr(head.size(), t.name.size() - head.size() - tail.size());
      const auto& meta = file_.metadata();
      auto type = meta.find(head + point + ".type");
      auto bits = meta.find(head + point + ".bits");
      if (type == meta.end() || bits == meta.end() || bits->second.size() != 1 || bits->second[0] < '1' ||
          bits->second[0] > '8')
        throw Error(file_.path(), "activation quantizer '" + point + "' lacks a valid type or bit width");
      ActQuant q;
      q.type = type->second;
      q.bits = bits->second[0] - '0';
      q.scale = file_.to_f32(t);
      if (q.type != "log_sqrt2") {
        const TensorInfo* z = file_.find(head + point + ".zero_point");
        if (!z || z->numel() != t.numel())
          throw Error(file_.path(), "activation quantizer '" + point + "': zero-point missing or of another shape");
        q.zero_point = file_.to_f32(*z);
      } else if (q.scale.size() != 1) {
        throw Error(file_.path(), "activation quantizer '" + point + "': log-sqrt2 takes one scale");
      }
      if (q.type != "per_tensor" && q.type != "per_channel" && q.type != "log_sqrt2")
        throw Error(file_.path(), "activation quantizer '" + point + "' has unknown type '" + q.type + "'");
      act_[point] = q;
    }
  }

  // The export's quantizer at `point` applied to x, exactly as the product's fake quantizers compute it (see
  // activation_quant.h). Uniform quantizers whose zero-points are integers in 0..255 become a QuantizeLinear /
  // DequantizeLinear pair (uint8; below 8 bits the input is first clamped to the b-bit range, which is what
  // the b-bit clip of the codes does); others (zero-points that LayerNorm folding made fractional) the same
  // arithmetic in elementary operators, as does log√2.
  std::string act(const std::string& point, const std::string& x) {
    auto it = act_.find(point);
    if (it == act_.end()) return x;
    ActQuant& q = it->second;
    q.used = true;
    const std::string where = "activation." + point;
    const int64_t C = static_cast<int64_t>(q.scale.size());
    const std::vector<int64_t> dims = C == 1 ? std::vector<int64_t>{} : std::vector<int64_t>{C};
    const std::string scale = b_.floats(where + ".scale", dims, q.scale);
    auto scalar = [&](const std::string& name, float v) { return b_.floats(where + "." + name, {}, {v}); };
    if (q.type == "log_sqrt2") {
      ++summary_->activation_elementwise;
      const float levels = static_cast<float>(1 << q.bits);
      std::string p = b_.op("Div", {x, scale}, where);
      p = b_.op("Log", {p}, where);
      p = b_.op("Mul", {p, scalar("minus_two_over_ln2", static_cast<float>(-2.0 / std::log(2.0)))}, where);
      p = b_.op("Round", {p}, where);
      const std::string zero = b_.op("Not", {b_.op("Less", {p, scalar("levels", levels)}, where)}, where);
      p = b_.op("Clip", {p, scalar("pmin", 0.f), scalar("pmax", levels - 1)}, where);
      const std::string odd = b_.op("Mod", {p, scalar("two", 2.f)}, where, [](auto* n) { set_int(n, "fmod", 1); });
      const std::string e =
          b_.op("Neg", {b_.op("Ceil", {b_.op("Div", {p, scalar("two_", 2.f)}, where)}, where)}, where);
      std::string out = b_.op("Pow", {scalar("base", 2.f), e}, where);
      const std::string f =
          b_.op("Add",
                {b_.op("Mul", {odd, scalar("sqrt2_minus_1", static_cast<float>(std::sqrt(2.0) - 1.0))}, where),
                 scalar("one", 1.f)},
                where);
      out = b_.op("Mul", {b_.op("Mul", {out, f}, where), scale}, where);
      return b_.op("Where", {zero, scalar("zero", 0.f), out}, where);
    }
    const float qmax = static_cast<float>((1 << q.bits) - 1);
    bool qdq = true;
    for (float z : q.zero_point) qdq = qdq && z >= 0 && z <= 255 && std::nearbyint(z) == z;
    if (qdq) {
      ++summary_->activation_qdq;
      std::vector<uint8_t> z8(q.zero_point.begin(), q.zero_point.end());
      const std::string zero = b_.init(where + ".zero_point", kUint8, dims, z8.data(), z8.size());
      std::string y = x;
      if (q.bits < 8) {
        std::vector<float> lo(C), hi(C);
        for (int64_t c = 0; c < C; ++c) {
          lo[c] = q.scale[c] * (0.f - q.zero_point[c]);
          hi[c] = q.scale[c] * (qmax - q.zero_point[c]);
        }
        y = b_.op("Max", {y, b_.floats(where + ".low", dims, lo)}, where);
        y = b_.op("Min", {y, b_.floats(where + ".high", dims, hi)}, where);
      }
      auto axis = [C](auto* n) {
        if (C > 1) set_int(n, "axis", -1);
      };
      y = b_.op("QuantizeLinear", {y, scale, zero}, where, axis);
      return b_.op("DequantizeLinear", {y, scale, zero}, where, axis);
    }
    ++summary_->activation_elementwise;
    const std::string zero = b_.floats(where + ".zero_point", dims, q.zero_point);
    std::string y = b_.op("Round", {b_.op("Div", {x, scale}, where)}, where);
    y = b_.op("Clip", {b_.op("Add", {y, zero}, where), scalar("qmin", 0.f), scalar("qmax", qmax)}, where);
    return b_.op("Mul", {b_.op("Sub", {y, zero}, where), scale}, where);
  }

  std::map<std::string, ActQuant> act_;
  SafetensorsFile file_;
  GraphBuilder b_;
  OnnxExportSummary* summary_;
  int version_ = 0;
  VitConfig c_;
  std::map<std::string, std::string> kinds_;
  std::set<std::string> added_;
};

}  // namespace

OnnxExportSummary export_onnx(const std::string& export_dir, const std::string& out_path) {
  // The configuration first: a folder that is not an export fails with its name, not the weights'.
  check_lorq_config_version((std::filesystem::path(export_dir) / "lorq-config.json").string());
  OnnxExportSummary summary;
  onnx::ModelProto model;
  model.set_ir_version(10);
  model.set_producer_name("lorq");
  model.set_producer_version("0.1.0");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(21);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name("lorq_vit");
  ViTWriter w(export_dir, g, &summary);
  w.write(g);
  std::string bytes;
  if (!model.SerializeToString(&bytes)) throw Error(out_path, "cannot serialise the ONNX model (over 2 GB?)");
  write_text_atomically(out_path, bytes);
  summary.file_bytes = static_cast<int64_t>(bytes.size());
  return summary;
}

#endif  // LORQ_HAVE_ONNX

}  // namespace lorq
