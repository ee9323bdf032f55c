#include "lorq/models/model.h"

#include <ATen/ATen.h>
#include <sys/stat.h>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"

namespace lorq {

const LinearLayerInfo& Model::layer(const std::string& name) const {
  for (const auto& l : layers_)
    if (l.name == name) return l;
  throw Error("no compressible layer named '" + name + "'");
}

void Model::register_linear(const LinearLayerInfo& info, at::Tensor* bias_slot) {
  layers_.push_back(info);
  if (bias_slot) bias_slots_[info.name] = bias_slot;
}

void Model::register_activation_point(const ActivationPoint& point) {
  for (const auto& p : points_)
    if (p.name == point.name) throw Error("activation point '" + point.name + "' registered twice");
  points_.push_back(point);
}

void Model::register_tensor(const std::string& key, at::Tensor* slot) {
  slot_index_[key] = slots_.size();
  slots_.emplace_back(key, slot);
}

std::vector<std::pair<std::string, at::Tensor>> Model::named_tensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  out.reserve(slots_.size());
  for (const auto& [key, slot] : slots_) out.emplace_back(key, *slot);
  return out;
}

at::Tensor Model::tensor(const std::string& key) const {
  auto it = slot_index_.find(key);
  if (it == slot_index_.end()) throw Error("the model has no tensor named '" + key + "'");
  return *slots_[it->second].second;
}

void Model::set_tensor(const std::string& key, const at::Tensor& value) {
  auto it = slot_index_.find(key);
  if (it == slot_index_.end()) throw Error("the model has no tensor named '" + key + "'");
  at::Tensor* slot = slots_[it->second].second;
  if (!value.defined() || value.sizes() != slot->sizes())
    throw Error("set_tensor(" + key + "): the new value must have the tensor's shape");
  *slot = value.detach().to(at::kFloat).contiguous();
}

at::Tensor Model::bias(const std::string& layer_name) const {
  return layer(layer_name).has_bias ? tensor(layer_name + ".bias") : at::Tensor();
}

void Model::set_bias(const std::string& layer_name, const at::Tensor& b) {
  const LinearLayerInfo& info = layer(layer_name);
  if (!b.defined() || b.dim() != 1 || b.size(0) != info.out_features)
    throw Error("set_bias(" + layer_name + "): expected a bias of " + std::to_string(info.out_features) + " values");
  if (info.has_bias) return set_tensor(layer_name + ".bias", b);
  auto slot = bias_slots_.find(layer_name);
  if (slot == bias_slots_.end()) throw Error("set_bias(" + layer_name + "): this layer cannot take a bias");
  *slot->second = b.detach().to(at::kFloat).contiguous();
  register_tensor(layer_name + ".bias", slot->second);
  for (auto& l : layers_)
    if (l.name == layer_name) l.has_bias = true;
  bias_added(layer_name);
}

at::Tensor Model::weight(const std::string& layer_name) const {
  const LinearLayerInfo& info = layer(layer_name);
  return tensor(layer_name + ".weight").reshape({info.out_features, info.in_features});
}

void Model::set_weight(const std::string& layer_name, const at::Tensor& w) {
  const LinearLayerInfo& info = layer(layer_name);
  if (w.dim() != 2 && w.sizes().vec() != info.weight_shape)
    throw Error("set_weight(" + layer_name + "): expected a 2-d or checkpoint-shaped weight");
  if (w.numel() != info.params() || (w.dim() == 2 && (w.size(0) != info.out_features || w.size(1) != info.in_features)))
    throw Error("set_weight(" + layer_name + "): shape mismatch, expected " + std::to_string(info.out_features) + "x" +
                std::to_string(info.in_features));
  at::Tensor* slot = slots_[slot_index_.at(layer_name + ".weight")].second;
  *slot = w.detach().to(at::kFloat).reshape(info.weight_shape).contiguous();
}

ModelOutputs Model::forward(const at::Tensor& images) { return run_from(0, embed(images)); }

ModelOutputs Model::run_from(int stage, StageState x) {
  for (int i = stage; i < num_stages(); ++i) x = run_stage(i, x);
  return finish(x);
}

std::string Model::label(int index) const {
  const auto& names = label_names();
  if (index >= 0 && index < static_cast<int>(names.size())) return names[index];
  return "class " + std::to_string(index);
}

StageState slice_batch(const StageState& state, int64_t begin, int64_t end) {
  StageState out;
  out.reserve(state.size());
  for (const at::Tensor& t : state) out.push_back(t.slice(0, begin, end));
  return out;
}

StageState cat_batches(const std::vector<StageState>& parts) {
  if (parts.empty()) return {};
  StageState out;
  for (size_t i = 0; i < parts[0].size(); ++i) {
    std::vector<at::Tensor> pieces;
    pieces.reserve(parts.size());
    for (const StageState& p : parts) pieces.push_back(p.at(i));
    out.push_back(at::cat(pieces));
  }
  return out;
}

int64_t state_bytes(const StageState& state) {
  int64_t bytes = 0;
  for (const at::Tensor& t : state) bytes += t.numel() * static_cast<int64_t>(t.element_size());
  return bytes;
}

void ModelOutputs::add(const std::string& name, const at::Tensor& t) {
  for (const auto& n : names)
    if (n == name) throw Error("model output '" + name + "' given twice");
  names.push_back(name);
  tensors.push_back(t);
}

at::Tensor ModelOutputs::at(const std::string& name) const {
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return tensors[i];
  std::string have;
  for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
  throw Error("the model has no output named '" + name + "' (it has: " + have + ")");
}

ModelOutputs ModelOutputs::slice(int64_t begin, int64_t end) const {
  ModelOutputs out;
  out.names = names;
  for (const at::Tensor& t : tensors) out.tensors.push_back(t.slice(0, begin, end));
  return out;
}

ModelOutputs ModelOutputs::cat(const std::vector<ModelOutputs>& parts) {
  ModelOutputs out;
  if (parts.empty()) return out;
  out.names = parts[0].names;
  for (size_t i = 0; i < out.names.size(); ++i) {
    std::vector<at::Tensor> pieces;
    for (const ModelOutputs& p : parts) pieces.push_back(p.tensors.at(i));
    out.tensors.push_back(at::cat(pieces));
  }
  return out;
}

void Model::set_linear_override(const std::string& name, LinearFn fn) {
  layer(name);  // throws for unknown layers
  overrides_[name] = std::move(fn);
}

void Model::clear_linear_override(const std::string& name) { overrides_.erase(name); }

void Model::set_observer(const std::vector<std::string>& names, LinearObserver observer) {
  observed_.clear();
  for (const auto& n : names) {
    layer(n);
    observed_[n] = true;
  }
  observer_ = std::move(observer);
}

void Model::clear_observer() {
  observed_.clear();
  observer_ = nullptr;
}

const ActivationPoint& Model::activation_point(const std::string& name) const {
  for (const auto& p : points_)
    if (p.name == name) return p;
  throw Error("no activation point named '" + name + "'");
}

void Model::set_activation_hook(const std::string& point, ActivationFn fn) {
  activation_point(point);  // throws for unknown points
  if (!fn) throw Error("set_activation_hook(" + point + "): empty function");
  activation_hooks_[point] = std::move(fn);
}

at::Tensor Model::run_activation_hook(const std::string& point, const at::Tensor& x) {
  auto it = activation_hooks_.find(point);
  return it == activation_hooks_.end() ? x : it->second(x);
}

at::Tensor Model::linear(const std::string& name, const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  at::Tensor y;
  if (!overrides_.empty()) {
    auto it = overrides_.find(name);
    if (it != overrides_.end()) y = it->second(x, w, b);
  }
  if (!y.defined()) y = parallel_linear(x, w, b);
  if (observer_ && observed_.count(name)) observer_(name, x, y);
  return y;
}

namespace {
bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
std::string parent_dir(const std::string& p) {
  auto pos = p.find_last_of('/');
  return pos == std::string::npos ? "." : p.substr(0, pos);
}
}  // namespace

ModelFiles locate_model_files(const std::string& path) {
  ModelFiles f;
  if (is_dir(path)) {
    for (const char* name : {"model.safetensors", "compressed.safetensors", "pytorch_model.safetensors"}) {
      if (is_file(path + "/" + name)) {
        f.weights = path + "/" + name;
        break;
      }
    }
    if (f.weights.empty()) throw Error(path, "no model.safetensors in this folder");
    if (is_file(path + "/config.json")) f.config = path + "/config.json";
    if (is_file(path + "/preprocessor_config.json")) f.preprocessor_config = path + "/preprocessor_config.json";
    return f;
  }
  if (!is_file(path)) throw Error(path, "no such file or folder");
  f.weights = path;
  const std::string dir = parent_dir(path);
  if (is_file(dir + "/config.json")) f.config = dir + "/config.json";
  if (is_file(dir + "/preprocessor_config.json")) f.preprocessor_config = dir + "/preprocessor_config.json";
  return f;
}

}  // namespace lorq
