// The weight pipeline end to end on the embedded demo (fast settings): budget met, allocation optimal against the
// uniform baseline at the same memory, the applied model measured on real (generated, held-out) images.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <set>
#include <sstream>

#include "lorq/quant/activation_quant.h"
#include "lorq/session/api.h"
#include "lorq/pipeline/compress.h"
#include "lorq/quant/compressed_layer.h"
#include "lorq/alloc/constraints_io.h"
#include "lorq/common/error.h"
#include "lorq/tasks/evaluate.h"
#include "lorq/io/export.h"
#include "lorq/io/export_size.h"
#include "lorq/io/packed_export.h"
#include "lorq/pipeline/sensitivity.h"
#include "lorq/pipeline/session_cache.h"
#include "lorq/io/tensor_io.h"

using namespace lorq;

class CompressDemo : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    init_threads();
    demo_ = new api::DemoPaths(api::find_demo());
    ASSERT_FALSE(demo_->model_dir.empty());
    auto model = load_model(demo_->model_dir);
    set_ = new ImageSet(open_labels_csv(demo_->labels_csv));
    CompressSettings s;
    s.calibration.images = 16;
    s.lfh_images = 4;
    s.lfh.projections = 16;
    s.global_error.anchors = 3;
    analysis_ = new CompressionAnalysis(analyze_model(*model, *set_, s));
  }
  static void TearDownTestSuite() {
    delete analysis_;
    delete set_;
    delete demo_;
  }
  static double top1_with(const Allocation* alloc) {
    auto m = load_model(demo_->model_dir);
    if (alloc) apply_allocation(*m, *analysis_, *alloc);
    return evaluate(*m, *set_, {}).top1_pct();
  }
  static api::DemoPaths* demo_;
  static ImageSet* set_;
  static CompressionAnalysis* analysis_;
};
api::DemoPaths* CompressDemo::demo_ = nullptr;
ImageSet* CompressDemo::set_ = nullptr;
CompressionAnalysis* CompressDemo::analysis_ = nullptr;

TEST_F(CompressDemo, EveryOptionHasAnErrorAndStagesAreTimed) {
  ASSERT_EQ(analysis_->layers.size(), 26u);
  for (const auto& l : analysis_->layers)
    for (const auto& o : l.options) EXPECT_GE(o.error, 0) << l.layer << " " << o.label();
  EXPECT_EQ(analysis_->stage_seconds.size(), 4u);
}

TEST_F(CompressDemo, BudgetIsMetAndBeatsUniformAtTheSameMemory) {
  for (int bits : {3, 4}) {
    const Allocation u = uniform_allocation(*analysis_, bits);
    const Allocation mixed = allocate(*analysis_, u.bytes);
    EXPECT_LE(mixed.bytes, u.bytes);
    // The uniform choice is feasible at this budget, so the exact optimum cannot predict more error.
    EXPECT_LE(mixed.predicted_error, u.predicted_error * (1 + 1e-12));
  }
}

TEST_F(CompressDemo, EightBitsKeepsFloatAccuracy) {
  const int64_t budget = analysis_->compressible_params;  // 8 bits per weight
  const Allocation a = allocate(*analysis_, budget);
  EXPECT_LE(a.bytes, budget);
  const double f = top1_with(nullptr), c = top1_with(&a);
  std::printf("demo: float top-1 %.2f%%, 8-bit mixed %.2f%%\n", f, c);
  EXPECT_NEAR(c, f, 1.0);
}

TEST_F(CompressDemo, BudgetOutsideTheAchievableRangeNamesTheLimits) {
  try {
    allocate(*analysis_, 10);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("below the smallest achievable size"), std::string::npos) << e.what();
  }
}

TEST_F(CompressDemo, ExportRoundTripsExactly) {
  // A tight budget so the choice mixes quantization and low rank.
  const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 3).bytes);
  bool has_low_rank = false, has_quant = false;
  for (size_t i = 0; i < a.choice.size(); ++i) {
    const auto kind = analysis_->layers[i].options[a.choice[i]].kind;
    (kind == OptionKind::LowRank ? has_low_rank : has_quant) = true;
  }
  EXPECT_TRUE(has_quant);
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_roundtrip";
  std::filesystem::remove_all(out);
  export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  for (const char* f : {"lorq-config.json", "compressed.safetensors", "config.json"})
    EXPECT_TRUE(std::filesystem::exists(out + "/" + f)) << f;
  EXPECT_FALSE(std::filesystem::exists(out + "/lorq-config.json.tmp"));

  auto in_memory = load_model(demo_->model_dir);
  apply_allocation(*in_memory, *analysis_, a);
  auto loaded = load_model(out);
  at::Tensor x = at::randn({5, 3, 64, 64});
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), in_memory->forward(x).logits())) << "low rank used: " << has_low_rank;
  for (const auto& [key, t] : in_memory->named_tensors()) EXPECT_TRUE(at::equal(loaded->tensor(key), t)) << key;

  // The codes are integers in range and the config records every layer.
  SafetensorsFile f = SafetensorsFile::open(out + "/compressed.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "lorq-compressed");
  std::ifstream cfg(out + "/lorq-config.json");
  std::stringstream ss;
  ss << cfg.rdbuf();
  EXPECT_NE(ss.str().find("\"blocks.5.mlp.fc2\""), std::string::npos);
  EXPECT_NE(ss.str().find("\"version\": 2"), std::string::npos);
  std::filesystem::remove_all(out);
}

TEST_F(CompressDemo, CorruptExportIsAClearError) {
  const Allocation a = uniform_allocation(*analysis_, 4);
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_corrupt";
  std::filesystem::remove_all(out);
  export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  // Drop one scale tensor: loading must name the file and the group.
  SafetensorsFile f = SafetensorsFile::open(out + "/compressed.safetensors");
  std::vector<std::pair<std::string, at::Tensor>> kept;
  for (const auto& info : f.tensors())
    if (info.name != "blocks.2.mlp.fc1.weight.scale") kept.emplace_back(info.name, read_tensor(f, info));
  std::map<std::string, std::string> meta = f.metadata();
  write_tensors(out + "/compressed.safetensors", kept, meta);
  try {
    load_model(out);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blocks.2.mlp.fc1.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("compressed.safetensors"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(out);
}

TEST(SessionCache, ReusesCompletedStagesAndIgnoresBadFiles) {
  init_threads();
  const api::DemoPaths demo = api::find_demo();
  auto model = load_model(demo.model_dir);
  ImageSet set = open_labels_csv(demo.labels_csv);
  CompressSettings s;
  s.calibration.images = 8;
  s.lfh_images = 2;
  s.lfh.projections = 8;
  s.global_error.anchors = 2;
  const std::string dir = ::testing::TempDir() + "/lorq_session_cache";
  std::filesystem::remove_all(dir);

  // Cancel in the global-error stage: the LFH and candidates are kept, nothing of the errors.
  std::atomic<bool> cancel{false};
  JobControl job;
  job.cancel = &cancel;
  job.progress = [&](const Progress& p) {
    if (p.stage == "global error") cancel = true;
  };
  EXPECT_THROW(analyze_model_cached(*model, demo.model_dir, set, s, dir, job), Cancelled);
  SessionCache cache(dir, demo.model_dir, set, s);
  std::map<std::string, at::Tensor> lfh;
  EXPECT_TRUE(cache.load_lfh(&lfh, nullptr));
  CompressionAnalysis partial;
  EXPECT_TRUE(cache.load_analysis(false, &partial, nullptr));
  EXPECT_FALSE(cache.load_analysis(true, &partial, nullptr));

  // Resume: completes, and a third run loads everything (identical options and errors).
  CompressionAnalysis first = analyze_model_cached(*model, demo.model_dir, set, s, dir);
  CompressionAnalysis again = analyze_model_cached(*model, demo.model_dir, set, s, dir);
  ASSERT_EQ(first.layers.size(), again.layers.size());
  // Every stage came from the cache, and says so without a warning.
  EXPECT_EQ(again.cached_stages,
            (std::vector<std::string>{"calibration", "sensitivity", "candidates", "global error"}));
  EXPECT_TRUE(again.warnings.empty());
  EXPECT_TRUE(again.stage_seconds.empty());
  // The run resumed after the cancel reused the LFH and the candidates.
  EXPECT_EQ(first.cached_stages, (std::vector<std::string>{"sensitivity", "candidates"}));
  for (size_t i = 0; i < first.layers.size(); ++i) {
    ASSERT_EQ(first.layers[i].options.size(), again.layers[i].options.size());
    for (size_t k = 0; k < first.layers[i].options.size(); ++k)
      EXPECT_EQ(first.layers[i].options[k].error, again.layers[i].options[k].error);
  }
  const int64_t budget = uniform_allocation(first, 4).bytes;
  EXPECT_EQ(allocate(first, budget).choice, allocate(again, budget).choice);

  // Another setting is another key; a corrupted file is ignored with a warning.
  CompressSettings other = s;
  other.global_error.anchors = 3;
  EXPECT_NE(SessionCache(dir, demo.model_dir, set, other).key(), cache.key());
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().string().find("analysis.safetensors") != std::string::npos)
      std::ofstream(e.path().string(), std::ios::trunc) << "garbage";
  std::vector<std::string> warnings;
  EXPECT_FALSE(cache.load_analysis(true, &partial, &warnings));
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("ignored the cached analysis"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST_F(CompressDemo, ConstraintsAreHonoured) {
  const int64_t budget = uniform_allocation(*analysis_, 4).bytes;
  Constraints c;
  c["blocks.0.mlp.fc1"].excluded = Exclusion::Q8;
  c["blocks.1.mlp.fc1"].min_bits = 6;
  c["blocks.2.mlp.fc1"].max_rank = 0;
  const auto& l3 = analysis_->layers[4];  // pin one more layer to its first option
  c[l3.layer].pinned_option = 0;
  const Allocation a = allocate(*analysis_, budget, c);
  EXPECT_LE(a.bytes, budget);
  for (size_t i = 0; i < analysis_->layers.size(); ++i) {
    const auto& l = analysis_->layers[i];
    const LayerOption& o = l.options[a.choice[i]];
    if (l.layer == "blocks.0.mlp.fc1") {
      EXPECT_TRUE(o.kind == OptionKind::Quant && o.bits == 8) << o.label();
    }
    if (l.layer == "blocks.1.mlp.fc1") {
      EXPECT_TRUE(o.kind == OptionKind::Quant ? o.bits >= 6 : (o.bits_a >= 6 && o.bits_b >= 6)) << o.label();
    }
    if (l.layer == "blocks.2.mlp.fc1") {
      EXPECT_EQ(o.kind, OptionKind::Quant) << o.label();
    }
    if (l.layer == l3.layer) {
      EXPECT_EQ(a.choice[i], 0);
    }
  }
  // Constraints cost accuracy, never budget: the predicted error can only grow.
  EXPECT_GE(a.predicted_error, allocate(*analysis_, budget).predicted_error * (1 - 1e-12));
  Constraints bad;
  bad["nope"].excluded = Exclusion::Q8;
  EXPECT_THROW(allocate(*analysis_, budget, bad), Error);
  Constraints impossible;
  impossible["head"].min_bits = 9;
  EXPECT_THROW(allocate(*analysis_, budget, impossible), Error);
}

TEST_F(CompressDemo, CacheKeyIgnoresHowImagePathsAreWritten) {
  ImageSet relative = *set_;
  for (auto& item : relative.items) item.path = std::filesystem::relative(item.path).string();
  ASSERT_NE(relative.items[0].path, set_->items[0].path);
  const std::string dir = ::testing::TempDir() + "/lorq_cache_key";
  CompressSettings s;
  EXPECT_EQ(SessionCache(dir, demo_->model_dir, *set_, s).key(), SessionCache(dir, demo_->model_dir, relative, s).key());
  ImageSet fewer = *set_;
  fewer.items.pop_back();
  EXPECT_NE(SessionCache(dir, demo_->model_dir, *set_, s).key(), SessionCache(dir, demo_->model_dir, fewer, s).key());
  std::filesystem::remove_all(dir);
}

TEST_F(CompressDemo, FloatExclusionAndGroupsAreHonoured) {
  const int64_t budget = uniform_allocation(*analysis_, 4).bytes;
  Constraints c;
  c["blocks.0.attn.qkv"].excluded = Exclusion::Float;
  std::vector<std::string> fc1;
  for (int b = 0; b < 6; ++b) fc1.push_back("blocks." + std::to_string(b) + ".mlp.fc1");
  c.groups.push_back(fc1);
  const Allocation a = allocate(*analysis_, budget, c);
  EXPECT_LE(a.bytes, budget);
  std::set<std::string> fc1_labels;
  int64_t bytes = 0;
  for (size_t i = 0; i < analysis_->layers.size(); ++i) {
    const auto& l = analysis_->layers[i];
    if (l.layer == "blocks.0.attn.qkv") {
      ASSERT_EQ(a.choice[i], kKeepFloat);
      bytes += 4 * l.out_features * l.in_features;
      continue;
    }
    bytes += l.options[a.choice[i]].bytes;
    if (l.layer.find("mlp.fc1") != std::string::npos) fc1_labels.insert(l.options[a.choice[i]].label());
  }
  EXPECT_EQ(bytes, a.bytes);
  EXPECT_EQ(fc1_labels.size(), 1u);

  // The grouped optimum is the best over the group's common labels, each tried as a pin of all members.
  double best = std::numeric_limits<double>::infinity();
  const auto& first = analysis_->layers[std::distance(
      analysis_->layers.begin(), std::find_if(analysis_->layers.begin(), analysis_->layers.end(),
                                              [&](const LayerCandidates& l) { return l.layer == fc1[0]; }))];
  for (const LayerOption& o : first.options) {
    Constraints pinned;
    pinned["blocks.0.attn.qkv"].excluded = Exclusion::Float;
    bool common = true;
    for (const auto& l : analysis_->layers) {
      if (l.layer.find("mlp.fc1") == std::string::npos) continue;
      auto it = std::find_if(l.options.begin(), l.options.end(),
                             [&](const LayerOption& x) { return x.label() == o.label(); });
      if (it == l.options.end())
        common = false;
      else
        pinned[l.layer].pinned_option = static_cast<int>(it - l.options.begin());
    }
    if (!common) continue;
    try {
      best = std::min(best, allocate(*analysis_, budget, pinned).predicted_error);
    } catch (const Error&) {  // this label does not fit the budget
    }
  }
  EXPECT_NEAR(a.predicted_error, best, 1e-12 * std::max(1.0, best));

  // A float-excluded layer grouped with a quantized one leaves no common option.
  Constraints clash;
  clash["blocks.0.attn.qkv"].excluded = Exclusion::Float;
  clash.groups.push_back({"blocks.0.attn.qkv", "blocks.1.attn.qkv"});
  EXPECT_THROW(allocate(*analysis_, budget, clash), Error);
  Constraints unknown;
  unknown.groups.push_back({"blocks.0.attn.qkv", "nope"});
  EXPECT_THROW(allocate(*analysis_, budget, unknown), Error);

  // The float layer round-trips through the export unchanged, and the largest budget now counts it as fp32.
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_float_layer";
  std::filesystem::remove_all(out);
  export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  auto loaded = load_model(out);
  EXPECT_TRUE(at::equal(loaded->weight("blocks.0.attn.qkv"), float_model->weight("blocks.0.attn.qkv")));
  auto in_memory = load_model(demo_->model_dir);
  apply_allocation(*in_memory, *analysis_, a);
  at::Tensor x = at::randn({3, 3, 64, 64});
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), in_memory->forward(x).logits()));
  std::filesystem::remove_all(out);
  const LayerAllocator with_float(*analysis_, c);
  EXPECT_GT(with_float.max_bytes(), LayerAllocator(*analysis_).max_bytes());
}

TEST_F(CompressDemo, RefitKeepsTheChoiceAndRoundTrips) {
  auto model = load_model(demo_->model_dir);
  const ImageSet set = open_labels_csv(demo_->labels_csv);
  at::Tensor images = load_batch(set, 0, 4, model->preprocessing()).images;
  LfhOptions lfh;
  lfh.projections = 16;
  const auto H = label_free_hessian(*model, images, lfh);
  const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 3).bytes);
  const auto stage1 = compress_layers(*model, *analysis_, a);
  const auto refit = refit_layers(*model, *analysis_, a, H);
  ASSERT_EQ(refit.size(), stage1.size());
  for (size_t i = 0; i < refit.size(); ++i) {
    EXPECT_EQ(refit[i].option.label(), stage1[i].option.label());
    const at::Tensor W = model->weight(refit[i].layer);
    const at::Tensor Wt = refit[i].dequantized_weight();
    ASSERT_EQ(Wt.sizes(), W.sizes());
    // Same relative error scale as stage 1 (a refit never turns a choice into garbage).
    const double e1 = (stage1[i].dequantized_weight() - W).pow(2).sum().item<double>();
    const double e2 = (Wt - W).pow(2).sum().item<double>();
    EXPECT_LT(e2, 3 * e1 + 1e-12) << refit[i].layer << " " << refit[i].option.label();
  }
  const std::string out = ::testing::TempDir() + "/lorq_export_refit";
  std::filesystem::remove_all(out);
  export_compressed(out, *model, demo_->model_dir, *analysis_, a, refit);
  auto loaded = load_model(out);
  apply_compressed_layers(*model, refit);
  at::Tensor x = at::randn({3, 3, 64, 64});
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), model->forward(x).logits()));
  std::filesystem::remove_all(out);
}

TEST_F(CompressDemo, ConstraintsJsonRoundTripsAndNamesBadInput) {
  Constraints c;
  c["head"].excluded = Exclusion::Float;
  c["blocks.0.attn.qkv"].pinned_option = 1;
  c["blocks.1.mlp.fc2"].min_bits = 4;
  c["blocks.1.mlp.fc2"].max_rank = 12;
  c["blocks.2.mlp.fc2"].excluded = Exclusion::Q8;
  c.groups.push_back({"blocks.3.mlp.fc1", "blocks.4.mlp.fc1"});
  const Constraints back = constraints_from_json(constraints_to_json(c, *analysis_), *analysis_, "mem");
  ASSERT_EQ(back.layers.size(), c.layers.size());
  for (const auto& [name, lc] : c.layers) {
    const LayerConstraint& b = back.layers.at(name);
    EXPECT_EQ(b.pinned_option, lc.pinned_option) << name;
    EXPECT_EQ(b.min_bits, lc.min_bits) << name;
    EXPECT_EQ(b.max_rank, lc.max_rank) << name;
    EXPECT_EQ(b.excluded, lc.excluded) << name;
  }
  EXPECT_EQ(back.groups, c.groups);
  auto message = [&](const std::string& text) {
    try {
      constraints_from_json(text, *analysis_, "my.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{").find("my.json: not valid JSON"), std::string::npos);
  EXPECT_NE(message(R"({"layers": {"nope": {}}})").find("unknown layer 'nope'"), std::string::npos);
  EXPECT_NE(message(R"({"layers": {"head": {"pin": "Q5"}}})").find("no option 'Q5'"), std::string::npos);
  EXPECT_NE(message(R"({"layers": {"head": {"exclude": "fp16"}}})").find("exclude must be"), std::string::npos);
  EXPECT_NE(message(R"({"groups": [["head", 3]]})").find("bad constraints"), std::string::npos);
}

TEST_F(CompressDemo, ActivationQuantizedExportRoundTripsExactly) {
  // W·A: LayerNorms folded and weights ridge-corrected at A6, the layers refitted to the rebuilt weights, the
  // quantizers exported with the codes; loading the folder must reproduce the in-memory outputs bit for bit.
  auto model = load_model(demo_->model_dir);
  at::Tensor images = load_batch(*set_, 0, 16, model->preprocessing()).images;
  ActQuantSettings as;
  as.bits = 6;
  as.num_images = 16;
  const ActivationQuantization aq = quantize_activations(*model, images, as);
  EXPECT_FALSE(aq.folded_norms.empty());
  disable_activation_quantization(*model);
  const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 4).bytes);
  const auto layers = refit_layers(*model, *analysis_, a, analysis_->lfh);
  const std::string out = ::testing::TempDir() + "/lorq_export_w4a6";
  std::filesystem::remove_all(out);
  apply_compressed_layers(*model, layers);
  export_compressed(out, *model, demo_->model_dir, *analysis_, a, layers, &aq);
  enable_activation_quantization(*model, aq);
  auto loaded = load_model(out);
  EXPECT_TRUE(loaded->has_activation_hooks());
  at::Tensor x = images.slice(0, 0, 4);
  EXPECT_TRUE(at::equal(loaded->forward(x).logits(), model->forward(x).logits()));
  disable_activation_quantization(*model);
  EXPECT_FALSE(at::equal(loaded->forward(x).logits(), model->forward(x).logits()));  // the quantizers do act
  std::filesystem::remove_all(out);
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string replace_once(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  if (at != std::string::npos) s.replace(at, from.size(), to);
  return s;
}

// Rewrites a packed export's weights with one edit: `edit` may change any tensor (by name) or the metadata.
void rewrite_export(const std::string& dir, const std::function<void(std::vector<std::pair<std::string, at::Tensor>>&,
                                                                     std::map<std::string, std::string>&)>& edit) {
  const std::string path = dir + "/compressed.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  std::map<std::string, std::string> meta;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const auto& info : f.tensors()) tensors.emplace_back(info.name, read_tensor(f, info));
    meta = f.metadata();
  }
  edit(tensors, meta);
  write_tensors(path, tensors, meta);
}

std::string load_error(const std::string& dir) {
  try {
    load_model(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

}  // namespace

TEST_F(CompressDemo, PackedExportIsAsSmallAsTheBudgetSays) {
  const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 3).bytes);
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_size";
  std::filesystem::remove_all(out);
  export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  const ExportSizeBreakdown s = export_size_breakdown(out);
  std::printf("%s", format_export_size(s).c_str());
  EXPECT_EQ(s.format_version, 2);
  EXPECT_EQ(s.budget_bytes, a.budget_bytes);
  // Every demo row holds a whole number of bytes of codes, so the packed codes are exactly the budget's count.
  EXPECT_EQ(s.code_bytes, s.budget_code_bytes);
  EXPECT_EQ(s.file_bytes, static_cast<int64_t>(std::filesystem::file_size(out + "/compressed.safetensors")));
  EXPECT_EQ(s.file_bytes, s.code_bytes + s.param_bytes + s.float_layer_bytes + s.float_other_bytes + s.header_bytes);
  // Scales (4 B) and uint8 zero-points (1 B) per row: 5 B for each row of W, A (m rows) and B (r rows).
  int64_t rows = 0;
  for (size_t i = 0; i < a.choice.size(); ++i) {
    const LayerOption& o = analysis_->layers[i].options[a.choice[i]];
    rows += analysis_->layers[i].out_features + (o.kind == OptionKind::LowRank ? o.rank : 0);
  }
  EXPECT_EQ(s.param_bytes, 5 * rows);
  int64_t params = 0;
  for (const auto& [key, t] : float_model->named_tensors()) params += t.numel();
  EXPECT_EQ(s.float_checkpoint_bytes, 4 * params);
  std::filesystem::remove_all(out);
}

TEST_F(CompressDemo, OldUnpackedExportStillLoadsAndUnknownVersionsAreRejected) {
  const Allocation a = allocate(*analysis_, uniform_allocation(*analysis_, 3).bytes);
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_versions";
  std::filesystem::remove_all(out);
  export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  auto packed = load_model(out);
  // Version 1 as the previous release wrote it: one byte per code, float32 zero-points, no shape or layout.
  {
    SafetensorsFile f = SafetensorsFile::open(out + "/compressed.safetensors");
    std::map<std::string, QuantGroup> groups;
    for (const std::string& p : quant_group_prefixes(f)) groups[p] = read_quant_group(f, p, 2);
    rewrite_export(out, [&](auto& tensors, auto& meta) {
      for (auto& [name, t] : tensors) {
        for (const auto& [p, g] : groups) {
          if (name == p + ".codes")
            t = at::from_blob(const_cast<uint8_t*>(g.codes.data()), {g.rows, g.cols}, at::kByte).clone();
          if (name == p + ".zero_point") t = t.to(at::kFloat);
        }
      }
      for (const auto& [p, g] : groups) {
        meta.erase(p + ".shape");
        meta.erase(p + ".layout");
      }
      meta["lorq_format_version"] = "1";
    });
    write_text(out + "/lorq-config.json",
               replace_once(read_text(out + "/lorq-config.json"), "\"version\": 2", "\"version\": 1"));
  }
  auto unpacked = load_model(out);
  const at::Tensor x = at::randn({3, 3, 64, 64});
  EXPECT_TRUE(at::equal(unpacked->forward(x).logits(), packed->forward(x).logits()));
  EXPECT_GT(export_size_breakdown(out).code_bytes, export_size_breakdown(out).budget_code_bytes);

  rewrite_export(out, [](auto&, auto& meta) { meta["lorq_format_version"] = "7"; });
  std::string e = load_error(out);
  EXPECT_NE(e.find("compressed.safetensors: lorq export format version 7 is not supported"), std::string::npos) << e;
  rewrite_export(out, [](auto&, auto& meta) { meta["lorq_format_version"] = "1"; });
  write_text(out + "/lorq-config.json",
             replace_once(read_text(out + "/lorq-config.json"), "\"version\": 1", "\"version\": 9"));
  e = load_error(out);
  EXPECT_NE(e.find("lorq-config.json: lorq export format version 9 is not supported"), std::string::npos) << e;
  std::filesystem::remove_all(out);
}

TEST_F(CompressDemo, MalformedPackedExportsAreNamedErrors) {
  const Allocation a = uniform_allocation(*analysis_, 4);
  auto float_model = load_model(demo_->model_dir);
  const std::string out = ::testing::TempDir() + "/lorq_export_malformed";
  const std::string group = "blocks.1.attn.proj.weight";
  auto fresh = [&] {
    std::filesystem::remove_all(out);
    export_compressed(out, *float_model, demo_->model_dir, *analysis_, a);
  };
  auto expect_error = [&](const std::string& what, const std::string& needle) {
    const std::string e = load_error(out);
    EXPECT_NE(e.find("compressed.safetensors: '" + group + "': "), std::string::npos) << what << ": " << e;
    EXPECT_NE(e.find(needle), std::string::npos) << what << ": " << e;
  };
  fresh();
  rewrite_export(out, [&](auto& tensors, auto&) {
    for (auto& [name, t] : tensors)
      if (name == group + ".codes") t = t.slice(0, 0, t.size(0) - 1).clone();
  });
  expect_error("truncated codes", "packed codes are [95, 48]");
  fresh();
  rewrite_export(out, [&](auto&, auto& meta) { meta[group + ".bits"] = "3"; });
  expect_error("wrong bit width", "need [96, 36]");
  fresh();
  rewrite_export(out, [&](auto&, auto& meta) { meta[group + ".bits"] = "12"; });
  expect_error("bit width out of range", "outside 1..8");
  fresh();
  rewrite_export(out, [&](auto&, auto& meta) { meta[group + ".shape"] = "[96, 90]"; });
  expect_error("shape not matching", "96 rows of 90 codes at 4 bits need [96, 45]");
  fresh();
  rewrite_export(out, [&](auto&, auto& meta) { meta[group + ".shape"] = "[96, 95]"; });  // same packed width
  expect_error("shape not matching the padding", "non-zero padding bits");
  fresh();
  rewrite_export(out, [&](auto& tensors, auto&) {
    for (auto& [name, t] : tensors)
      if (name == group + ".scale") t = t.slice(0, 0, 10).clone();
  });
  expect_error("scales of another length", "one value per row");
  std::filesystem::remove_all(out);
}
