// round_layers (spec §10.2): the sequential driver. The network is run segment by segment (embedding, each stage,
// finish), with every segment's input cached twice: from the float network and from the compressed network so far.
// A segment's layers are learned one after the other from those caches, re-running only that segment; once they
// are all done, the compressed cache advances through the segment with the learned codes.
#include "lorq/quant/adaptive_rounding.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>

#include "lorq/common/error.h"
#include "lorq/common/parallel_ops.h"
#include "rounding_checkpoint.h"

namespace lorq {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Thrown by the capturing override to skip the rest of a segment once the wanted input is recorded.
struct StopSegment {};

// Leaves the model as it was found: no override or observer of ours survives round_layers.
class HookGuard {
 public:
  explicit HookGuard(Model& m) : model_(m) {}
  ~HookGuard() { clear(); }
  void set_override(const std::string& layer, Model::LinearFn fn) {
    model_.set_linear_override(layer, std::move(fn));
    overridden_.insert(layer);
  }
  void clear() {
    for (const auto& l : overridden_) model_.clear_linear_override(l);
    overridden_.clear();
    model_.clear_observer();
  }

 private:
  Model& model_;
  std::set<std::string> overridden_;
};

// Segment −1 is embed() (its input: the images), 0..S−1 the stages, S finish() (its output: the model's outputs).
StageState run_segment(Model& model, int segment, const StageState& x) {
  if (segment < 0) return model.embed(x.at(0));
  if (segment < model.num_stages()) return model.run_stage(segment, x);
  return model.finish(x).tensors;
}

// The segment each layer runs in, found by watching one image go through the network.
std::map<std::string, int> segments_of_layers(Model& model, const at::Tensor& image) {
  std::map<std::string, int> where;
  int current = -1;
  std::vector<std::string> names;
  for (const auto& l : model.linear_layers()) names.push_back(l.name);
  model.set_observer(names, [&](const std::string& layer, const at::Tensor&, const at::Tensor&) {
    if (!where.count(layer)) where[layer] = current;
  });
  StageState x{image};
  for (current = -1; current <= model.num_stages(); ++current) x = run_segment(model, current, x);
  model.clear_observer();
  for (const auto& n : names)
    if (!where.count(n)) throw Error("adaptive rounding: layer '" + n + "' is never run by the model's forward pass");
  return where;
}

// Rows of one layer's activations: T tokens of each image, the same tokens for its input and its float output, and
// apart from them every image's readout tokens (Model::readout_tokens), which the loss weights on their own.
class TokenSample {
 public:
  using ReadoutFn = std::function<std::vector<int64_t>(int64_t length)>;
  TokenSample(int64_t images, int tokens_per_image, uint64_t seed, ReadoutFn readout)
      : N_(images), T_(tokens_per_image), seed_(seed), readout_(std::move(readout)) {}
  // Copies the sampled rows of `t` ([B, L, C] or [B, C]) for images n0..n0+B−1 into `rows` [N·T, C] and the readout
  // tokens' rows into `readout_rows` [N·R, C] (left undefined when the layer has none).
  void capture(const at::Tensor& t, int64_t n0, at::Tensor& rows, at::Tensor& readout_rows) {
    const at::Tensor t3 = t.dim() == 2 ? t.unsqueeze(1) : t.reshape({t.size(0), -1, t.size(-1)});
    const int64_t B = t3.size(0), L = t3.size(1), C = t3.size(2);
    if (!index_.defined()) make_index(t.dim() == 2 ? 1 : L);
    gather_rows(t3, index_, n0, B, C, rows);
    if (readout_index_.defined()) gather_rows(t3, readout_index_, n0, B, C, readout_rows);
  }

 private:
  void make_index(int64_t L) {
    std::vector<int64_t> readout = L > 1 && readout_ ? readout_(L) : std::vector<int64_t>();
    at::Tensor others = at::arange(L);
    if (!readout.empty() && static_cast<int64_t>(readout.size()) < L) {
      const at::Tensor r = at::tensor(readout, at::kLong);
      readout_index_ = r.expand({N_, r.size(0)}).contiguous();
      at::Tensor keep = at::ones({L}, at::kBool);
      keep.index_fill_(0, r, false);
      others = others.masked_select(keep);
    }
    const int64_t K = others.size(0), T = T_ > 0 ? std::min<int64_t>(T_, K) : K;
    at::Generator gen = at::detail::createCPUGenerator(seed_);
    const at::Tensor pick =
        T == K ? at::arange(K).expand({N_, K}) : std::get<1>(at::rand({N_, K}, gen).sort(1)).slice(1, 0, T);
    index_ = others.index({pick.reshape(-1)}).reshape({N_, T}).contiguous();
  }
  void gather_rows(const at::Tensor& t3, const at::Tensor& index, int64_t n0, int64_t B, int64_t C, at::Tensor& rows) {
    const int64_t T = index.size(1);
    if (!rows.defined()) rows = at::empty({N_ * T, C});
    const at::Tensor idx = index.slice(0, n0, n0 + B).unsqueeze(-1).expand({B, T, C});
    rows.slice(0, n0 * T, (n0 + B) * T).copy_(at::gather(t3, 1, idx).reshape({B * T, C}));
  }

  int64_t N_;
  int T_;
  uint64_t seed_;
  ReadoutFn readout_;
  at::Tensor index_, readout_index_;
};

// The compressed layers must be the model's, in its order, without overrides of their own.
void check_rounding_inputs(const Model& model, const std::vector<CompressedLayer>& layers) {
  const auto& infos = model.linear_layers();
  if (layers.size() != infos.size())
    throw Error("adaptive rounding: " + std::to_string(layers.size()) + " compressed layers for a model with " +
                std::to_string(infos.size()) + " layers");
  for (size_t i = 0; i < infos.size(); ++i) {
    if (layers[i].layer != infos[i].name)
      throw Error("adaptive rounding: layer " + std::to_string(i) + " is '" + layers[i].layer + "', the model's is '" +
                  infos[i].name + "' (layers must be in model order)");
    if (model.has_linear_override(infos[i].name))
      throw Error("adaptive rounding: layer '" + infos[i].name +
                  "' already has a linear override (rounding runs without activation quantization; clear it first)");
  }
}

// The model must be the float reference: a model already holding every compressed W̃ would be its own target.
void check_float_reference(const Model& model, const std::vector<CompressedLayer>& layers) {
  int compressed = 0, applied = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].form == LayerForm::Float) continue;
    ++compressed;
    applied += at::equal(model.weight(layers[i].layer), layers[i].dequantized_weight()) ? 1 : 0;
  }
  if (compressed > 0 && applied == compressed)
    throw Error("adaptive rounding: the model holds the compressed weights; pass the float model they came from");
}

// A group's name in progress and step reports: the layers' common dotted prefix ("blocks.3"), else "first..last".
std::string group_label(const std::vector<std::string>& names) {
  if (names.size() == 1) return names[0];
  std::string prefix = names[0];
  for (const std::string& n : names) {
    size_t k = 0;
    while (k < prefix.size() && k < n.size() && prefix[k] == n[k]) ++k;
    prefix.resize(k);
  }
  const size_t dot = prefix.rfind('.');
  const std::string whole = dot == std::string::npos ? "" : prefix.substr(0, dot);
  return whole.empty() ? names.front() + ".." + names.back() : whole;
}

struct LayerData {
  rounding::LayerRoundingData rows;
  TokenSample tokens;
};

}  // namespace

RoundingReport round_layers(Model& model, std::vector<CompressedLayer>& layers, const at::Tensor& images,
                            const RoundingSettings& s, const JobControl& job, RoundingCheckpoint* checkpoint,
                            const RoundingStepFn& on_step) {
  const auto start = std::chrono::steady_clock::now();
  c10::NoGradGuard no_grad;
  RoundingReport report;
  const auto& infos = model.linear_layers();
  check_rounding_inputs(model, layers);
  if (images.dim() != 4 || images.size(0) == 0) throw Error("adaptive rounding: expected [N, C, H, W] images");
  if (s.images < 1 || s.batch < 1) throw Error("adaptive rounding: images and batch must be at least 1");
  check_float_reference(model, layers);
  const int64_t originals = std::min<int64_t>(images.size(0), s.images);
  if (originals < s.images)
    report.warnings.push_back("adaptive rounding uses " + std::to_string(originals) + " images (" +
                              std::to_string(s.images) + " requested)");
  const at::Tensor calib = with_augmented_views(images.slice(0, 0, originals).to(at::kFloat).contiguous(),
                                                s.augmented_views, s.seed + 0x5eed, s.augment);
  const int64_t N = calib.size(0);

  std::vector<size_t> todo;  // layers to learn in this run
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < layers.size(); ++i) {
    index_of[layers[i].layer] = i;
    if (layers[i].form != LayerForm::Float && !layers[i].rounding_learned) todo.push_back(i);
  }
  std::string key;
  std::map<std::string, LayerRoundingResult> finished;  // everything the checkpoint records
  if (checkpoint) {
    key = rounding_checkpoint_key(model, layers, calib, s);
    for (LayerRoundingResult& r : load_rounding_checkpoint(checkpoint->path, key, layers, &report.warnings)) {
      r.from_checkpoint = true;
      finished[r.layer] = r;
      report.layers.push_back(r);
    }
  }
  std::vector<size_t> pending;
  for (size_t i : todo)
    if (!finished.count(layers[i].layer)) pending.push_back(i);
  const int n_round = static_cast<int>(todo.size());
  int done = n_round - static_cast<int>(pending.size());
  if (pending.empty()) {
    report.seconds = seconds_since(start);
    return report;
  }

  HookGuard hooks(model);
  const std::map<std::string, int> segment_of = segments_of_layers(model, calib.slice(0, 0, 1));
  std::map<int, std::vector<size_t>> segment_layers;  // compressed layers per segment, in order
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].form != LayerForm::Float) segment_layers[segment_of.at(layers[i].layer)].push_back(i);
  std::set<size_t> pending_set(pending.begin(), pending.end());
  const int last_segment = segment_of.at(layers[pending.back()].layer);
  auto bias_of = [&](size_t i) { return infos[i].has_bias ? model.tensor(infos[i].name + ".bias") : at::Tensor(); };

  // Runs `segment` over the cached input in batches, storing the output when `out` is given.
  std::function<void(int64_t)> on_batch;
  auto run_over = [&](int segment, const StageState& in, StageState* out) {
    for (int64_t n0 = 0; n0 < N; n0 += s.batch) {
      const int64_t n1 = std::min<int64_t>(N, n0 + s.batch);
      job.check();
      if (on_batch) on_batch(n0);
      StageState y;
      try {
        y = run_segment(model, segment, slice_batch(in, n0, n1));
      } catch (const StopSegment&) {
        continue;
      }
      if (out) {
        if (out->empty()) {
          for (const at::Tensor& t : y) {
            std::vector<int64_t> shape = t.sizes().vec();
            shape[0] = N;
            out->push_back(at::empty(shape, t.options()));
          }
        }
        for (size_t i = 0; i < y.size(); ++i) (*out)[i].slice(0, n0, n1).copy_(y[i]);
      }
    }
  };
  // Overrides every compressed layer of the segment with its current W̃ (learned codes for the finished ones).
  auto use_compressed = [&](int segment) {
    for (size_t i : segment_layers[segment]) {
      const at::Tensor Wt = layers[i].dequantized_weight();
      hooks.set_override(layers[i].layer, [Wt](const at::Tensor& x, const at::Tensor&, const at::Tensor& b) {
        return parallel_linear(x, Wt, b);
      });
    }
  };

  StageState float_in{calib}, comp_in{calib};
  for (int segment = -1; segment <= last_segment; ++segment) {
    job.check();
    std::vector<size_t> learn;
    for (size_t i : segment_layers[segment])
      if (pending_set.count(i)) learn.push_back(i);

    const bool joint = s.scope == RoundingScope::Segment && !learn.empty();
    // Float pass: every learned layer's target rows (the segment's output when learned jointly), and the next
    // segment's float input.
    std::map<size_t, LayerData> data;
    std::vector<std::string> watched;
    for (size_t i : joint ? std::vector<size_t>() : learn) {
      const std::string name = layers[i].layer;
      auto readout = [&model, name](int64_t length) { return model.readout_tokens(name, length); };
      data.emplace(i, LayerData{{}, TokenSample(N, s.tokens_per_image, s.seed + 7919 * i, readout)});
      watched.push_back(layers[i].layer);
    }
    int64_t batch_start = 0;
    on_batch = [&](int64_t n0) { batch_start = n0; };
    hooks.clear();
    model.set_observer(watched, [&](const std::string& layer, const at::Tensor&, const at::Tensor& out) {
      LayerData& d = data.at(index_of.at(layer));
      d.tokens.capture(out, batch_start, d.rows.Y, d.rows.readout_Y);
    });
    StageState float_next;
    run_over(segment, float_in, segment < last_segment || joint ? &float_next : nullptr);
    model.clear_observer();

    if (joint) {
      std::vector<CompressedLayer*> ls;
      std::vector<std::string> names;
      for (size_t i : learn) {
        ls.push_back(&layers[i]);
        names.push_back(layers[i].layer);
      }
      const std::string label = group_label(names);
      char head[200];
      if (learn.size() == 1)
        std::snprintf(head, sizeof head, "layer %d/%d %s", done + 1, n_round, label.c_str());
      else
        std::snprintf(head, sizeof head, "layers %d-%d/%d %s", done + 1, done + static_cast<int>(learn.size()), n_round,
                      label.c_str());
      job.report({"rounding", done, n_round, seconds_since(start), std::string(head) + ": learning together"});
      rounding::SegmentRoundingData sd{comp_in, float_next, {}};
      const at::Tensor& out0 = float_next.at(0);
      if (out0.dim() == 3) sd.readout = model.readout_tokens(layers[learn.back()].layer, out0.size(1));
      hooks.clear();
      use_compressed(segment);  // the segment's layers finished earlier keep their codes
      const int iterations = s.iterations;
      auto step = [&](int it, double rec, double reg, double beta) {
        if (on_step) on_step({done, n_round, static_cast<int>(learn.size()), label, it, iterations, rec, reg, beta});
        if (it % 10 == 0 || it + 1 == iterations) {
          char detail[400];
          std::snprintf(detail, sizeof detail, "%s it %d/%d rec %.4g reg %.4g", head, it + 1, iterations, rec, reg);
          job.report({"rounding", done, n_round, seconds_since(start), detail});
        }
      };
      const std::vector<LayerRoundingResult> rs = rounding::learn_segment(
          model, [&](const StageState& x) { return run_segment(model, segment, x); }, ls, sd, s, job, step);
      for (const LayerRoundingResult& r : rs) {
        finished[r.layer] = r;
        report.layers.push_back(r);
      }
      done += static_cast<int>(rs.size());
      if (checkpoint) save_rounding_checkpoint(checkpoint->path, key, layers, finished);
      job.report({"rounding", done, n_round, seconds_since(start), std::string(head) + ": done"});
      learn.clear();  // learned: nothing left for the layer-by-layer loop below
    }

    for (size_t k = 0; k < learn.size(); ++k) {
      const size_t i = learn[k];
      CompressedLayer& layer = layers[i];
      const auto layer_start = std::chrono::steady_clock::now();
      char head[160];
      std::snprintf(head, sizeof head, "layer %d/%d %s", done + 1, n_round, layer.layer.c_str());
      job.report({"rounding", done, n_round, seconds_since(start), std::string(head) + ": collecting data"});
      // Compressed pass up to this layer: its input rows; the rest of the segment is skipped.
      LayerData& d = data.at(i);
      hooks.clear();
      use_compressed(segment);
      hooks.set_override(layer.layer, [&](const at::Tensor& x, const at::Tensor&, const at::Tensor&) -> at::Tensor {
        d.tokens.capture(x, batch_start, d.rows.X, d.rows.readout_X);
        throw StopSegment{};
      });
      run_over(segment, comp_in, nullptr);
      hooks.clear();
      const double collect_seconds = seconds_since(layer_start);

      const int iterations = s.iterations;
      auto step = [&](int it, double rec, double reg, double beta) {
        if (on_step) on_step({done, n_round, 1, layer.layer, it, iterations, rec, reg, beta});
        if (it % 10 == 0 || it + 1 == iterations) {
          char detail[320];
          std::snprintf(detail, sizeof detail, "%s it %d/%d rec %.4g reg %.4g", head, it + 1, iterations, rec, reg);
          job.report({"rounding", done, n_round, seconds_since(start), detail});
        }
      };
      LayerRoundingResult r;
      {
        BlasThreadsScope blas_threads;  // autograd GEMMs: give OpenBLAS the threads (see parallel_ops.h)
        r = rounding::learn_layer(layer, bias_of(i), d.rows, s, job, step);
      }
      r.seconds = seconds_since(layer_start);
      r.collect_seconds = collect_seconds;
      d.rows = rounding::LayerRoundingData();
      finished[layer.layer] = r;
      report.layers.push_back(r);
      ++done;
      if (checkpoint) save_rounding_checkpoint(checkpoint->path, key, layers, finished);
      job.report({"rounding", done, n_round, seconds_since(start), std::string(head) + ": done"});
    }

    if (segment < last_segment) {  // advance both caches past this segment
      StageState comp_next;
      hooks.clear();
      use_compressed(segment);
      on_batch = nullptr;
      run_over(segment, comp_in, &comp_next);
      hooks.clear();
      float_in = float_next;
      comp_in = comp_next;
    }
  }
  report.seconds = seconds_since(start);
  return report;
}

}  // namespace lorq
