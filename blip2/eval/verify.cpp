#include "blip2/eval/verify.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "blip2/io/safetensors.h"
#include "blip2/io/tensor_store.h"
#include "blip2/io/weight_map.h"
#include "blip2/model/blip2_model.h"
#include "blip2/train/losses.h"
#include "blip2/util/dtype.h"
#include "blip2/util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2 {

Tolerance tolerance_for(const std::string& name, bool integer) {
  if (integer) return {0, 0, true};
  auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (name.rfind("grad.", 0) == 0 || name.rfind("extra_grad.", 0) == 0) return {1e-4, 1e-3, false};
  if (name == "loss" || name.rfind("loss_", 0) == 0 || name == "train.loss") return {1e-5, 1e-4, false};
  if (has("logits") || has("scores")) return {1e-3, 1e-4, false};
  return {1e-4, 1e-4, false};
}

namespace {

using Results = std::map<std::string, torch::Tensor>;  // "" = the op's primary output

// The comma-separated `outputs` of a plan step as prefixes ("vision.*" -> "vision").
std::vector<std::string> output_prefixes(const std::string& spec) {
  std::vector<std::string> out;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, e - b + 1);
    if (item.size() >= 2 && item.compare(item.size() - 2, 2, ".*") == 0) item = item.substr(0, item.size() - 2);
    out.push_back(item);
  }
  return out;
}

bool covers(const std::string& prefix, const std::string& name) {
  return name == prefix || (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
                            name[prefix.size()] == '.');
}

void add_list(Results& r, const std::string& base, const std::vector<torch::Tensor>& ts) {
  for (size_t i = 0; i < ts.size(); ++i) r[base + "." + std::to_string(i)] = ts[i];
}

void add_vision(Results& r, const VisionOutput& v) {
  add_list(r, "vision.hidden_states", v.hidden_states);
  r["vision.last_hidden_state"] = v.last_hidden_state;
  r["vision.pooler_output"] = v.pooler_output;
}

void add_qformer(Results& r, const QFormerOutput& q) {
  add_list(r, "qformer.hidden_states", q.hidden_states);
  r["qformer.last_hidden_state"] = q.last_hidden_state;
  r["qformer.pooler_output"] = q.last_hidden_state.select(1, 0);
}

struct Step {
  std::string op;
  std::vector<std::string> prefixes;
  std::map<std::string, std::string> inputs;  // argument -> tensor name in inputs.safetensors
  json params;
};

class Replayer {
 public:
  Replayer(Blip2Model model, std::map<std::string, torch::Tensor> inputs,
           const std::map<std::string, torch::Tensor>& recorded)
      : model_(std::move(model)), inputs_(std::move(inputs)) {
    // Steps may read recorded outputs (e.g. sampled hard-negative indices).
    for (const auto& [n, t] : recorded) inputs_.emplace(n, t);
  }

  Results run(const Step& s) {
    if (s.op == "lm_loss") return lm_loss_step(s);
    if (s.op == "shift_right") return shift_right_step(s);
    if (s.op == "stage1_loss") return stage1_step(s);
    torch::NoGradGuard no_grad;
    if (s.op == "forward") return forward(s);
    if (s.op == "language_projection") return language_projection(s);
    if (s.op == "lm_inputs_embeds") return lm_inputs_embeds(s);
    if (s.op == "generate") return generate(s);
    if (s.op == "itm") return itm(s);
    if (s.op == "itc") return itc(s);
    if (s.op == "qformer") return qformer(s);
    if (s.op == "vision_with_projection") return vision_with_projection(s);
    if (s.op == "text_with_projection") return text_with_projection(s);
    throw Error("plan operation '" + s.op + "' is not supported by this build of blip2 verify");
  }

 private:
  torch::Tensor in(const Step& s, const std::string& arg, bool required = true) {
    auto it = s.inputs.find(arg);
    if (it == s.inputs.end()) {
      if (required) throw Error("plan step '" + s.op + "' needs input '" + arg + "'");
      return {};
    }
    auto t = inputs_.find(it->second);
    if (t == inputs_.end())
      throw Error("plan step '" + s.op + "' reads '" + it->second + "', which inputs.safetensors lacks");
    return t->second;
  }

  // Makes exactly the parameters named in params.trainable (model names, or
  // LAVIS names mapped) require gradients, with cleared gradients.
  void set_trainable(const json& params, bool lavis_names) {
    std::set<std::string> trainable;
    if (params.contains("trainable"))
      for (const auto& n : params["trainable"]) {
        auto name = n.get<std::string>();
        if (lavis_names) {
          auto m = io::lavis_to_hf(name);
          if (!m) continue;
          name = *m;
        }
        trainable.insert(name);
      }
    for (auto& p : model_->named_parameters()) {
      p.value().set_requires_grad(trainable.count(p.key()) > 0);
      p.value().mutable_grad() = torch::Tensor();
    }
  }

  void add_grads(Results& r, bool lavis_names, const std::string& prefix) {
    for (const auto& p : model_->named_parameters())
      if (p.value().requires_grad() && p.value().grad().defined())
        r[prefix + (lavis_names ? io::hf_to_lavis(p.key()) : p.key())] = p.value().grad().clone();
  }

  Results lm_loss_step(const Step& s) {
    set_trainable(s.params, false);
    auto out = blip2::lm_loss(*model_, in(s, "pixel_values"), in(s, "input_ids"), in(s, "attention_mask", false),
                              in(s, "labels"));
    out.loss.backward();
    Results r;
    r["loss"] = out.loss.detach();
    r["logits"] = out.logits.detach();
    if (out.decoder_input_ids.defined()) r["decoder_input_ids"] = out.decoder_input_ids;
    add_grads(r, false, "");
    r[""] = out.loss.detach();
    return r;
  }

  Results shift_right_step(const Step& s) {
    Results r;
    r[""] = blip2::shift_right(in(s, "labels"), s.params.value("decoder_start_token_id", int64_t{0}),
                               s.params.value("pad_token_id", int64_t{0}));
    r["decoder_input_ids"] = r[""];
    return r;
  }

  Results stage1_step(const Step& s) {
    set_trainable(s.params, true);
    Stage1Options o;
    o.itc_label_smoothing = s.params.value("itc_label_smoothing", o.itc_label_smoothing);
    o.itg_label_smoothing = s.params.value("itg_label_smoothing", o.itg_label_smoothing);
    o.itm_label_smoothing = s.params.value("itm_label_smoothing", o.itm_label_smoothing);
    o.diag_fill = s.params.value("diag_fill", o.diag_fill);
    o.dec_token_id = s.params.value("bos_token_id", o.dec_token_id);
    o.pad_token_id = s.params.value("pad_token_id", o.pad_token_id);
    if (s.params.value("world_size", 1) != 1)
      throw Error("stage1_loss replay supports world_size 1 (the golden single-process case)");
    Stage1Inputs x;
    x.vit_embeds = in(s, "vit_embeds");
    x.text_ids = in(s, "text_input_ids");
    x.text_mask = in(s, "text_attention_mask", false);
    x.neg_image_idx = in(s, "neg_image_idx", false);
    x.neg_text_idx = in(s, "neg_text_idx", false);
    auto out = stage1_forward(*model_, x, o);
    out.loss.backward();
    Results r;
    for (auto [n, t] : std::vector<std::pair<std::string, torch::Tensor>>{
             {"loss", out.loss}, {"loss_itc", out.loss_itc}, {"loss_itm", out.loss_itm}, {"loss_lm", out.loss_lm},
             {"itc.image_feats", out.image_feats}, {"itc.text_feat", out.text_feat}, {"itc.sim_i2t", out.sim_i2t},
             {"itc.sim_t2i", out.sim_t2i}, {"itm.weights_i2t", out.weights_i2t}, {"itm.weights_t2i", out.weights_t2i},
             {"itm.neg_image_idx", out.neg_image_idx}, {"itm.neg_text_idx", out.neg_text_idx},
             {"itm.logits", out.itm_logits}, {"itm.labels", out.itm_labels}, {"itg.logits", out.itg_logits},
             {"itg.labels", out.itg_labels}})
      r[n] = t.detach();
    add_grads(r, true, "grad.");
    return r;
  }

  Results forward(const Step& s) {
    auto out = model_->forward(in(s, "pixel_values"), in(s, "input_ids", false), in(s, "attention_mask", false),
                               in(s, "decoder_input_ids", false), true);
    Results r;
    add_vision(r, out.vision);
    add_qformer(r, out.qformer);
    r["language_projection"] = out.language_projection;
    r["lm.inputs_embeds"] = out.inputs_embeds;
    if (model_->language_model->is_encoder_decoder()) {
      add_list(r, "lm.encoder_hidden_states", out.lm.encoder_hidden_states);
      add_list(r, "lm.decoder_hidden_states", out.lm.decoder_hidden_states);
      r["lm.encoder_last_hidden_state"] = out.lm.encoder_last_hidden_state;
    } else {
      add_list(r, "lm.hidden_states", out.lm.hidden_states);
    }
    r["logits"] = out.lm.logits;
    r[""] = out.lm.logits;
    return r;
  }

  torch::Tensor projected(const Step& s) {
    auto img = model_->encode_image(in(s, "pixel_values")).last_hidden_state;
    return model_->language_projection->forward(model_->query_image(img).last_hidden_state);
  }

  Results language_projection(const Step& s) {
    Results r;
    r[""] = projected(s);
    return r;
  }

  Results lm_inputs_embeds(const Step& s) {
    Results r;
    r[""] = model_->lm_inputs(projected(s), in(s, "input_ids", false), in(s, "attention_mask", false)).first;
    return r;
  }

  Results generate(const Step& s) {
    GenerationConfig g;
    const json& p = s.params;
    auto geti = [&](const char* k, int64_t& v) {
      if (p.contains(k) && p[k].is_number_integer()) v = p[k].get<int64_t>();
    };
    geti("max_new_tokens", g.max_new_tokens);
    geti("min_new_tokens", g.min_new_tokens);
    geti("num_beams", g.num_beams);
    geti("num_return_sequences", g.num_return_sequences);
    geti("no_repeat_ngram_size", g.no_repeat_ngram_size);
    if (p.contains("length_penalty")) g.length_penalty = p["length_penalty"].get<double>();
    if (p.contains("repetition_penalty")) g.repetition_penalty = p["repetition_penalty"].get<double>();
    if (p.contains("eos_token_id") && p["eos_token_id"].is_number_integer())
      g.eos_token_id = p["eos_token_id"].get<int64_t>();
    if (p.contains("pad_token_id") && p["pad_token_id"].is_number_integer())
      g.pad_token_id = p["pad_token_id"].get<int64_t>();
    if (p.contains("early_stopping") && p["early_stopping"].is_boolean())
      g.early_stopping = p["early_stopping"].get<bool>() ? EarlyStopping::kFirst : EarlyStopping::kHeuristic;
    g.output_logits = g.num_beams == 1;
    // The reference called Blip2ForConditionalGeneration.generate (which
    // prepends BOS for decoder-only LMs) unless several sequences were
    // returned: that version only supports those through the LM's own generate.
    const bool prepend_bos = g.num_return_sequences == 1;
    auto out = model_->generate(in(s, "pixel_values"), in(s, "input_ids", false), in(s, "attention_mask", false), g,
                                prepend_bos);
    Results r;
    r["ids"] = out.sequences;
    r[""] = out.sequences;
    if (out.sequences_scores.defined()) r["sequences_scores"] = out.sequences_scores;
    if (out.step_logits.defined()) r["step_logits"] = out.step_logits;
    return r;
  }

  Results itm(const Step& s) {
    auto out = model_->itm(in(s, "pixel_values"), in(s, "input_ids"), in(s, "attention_mask", false));
    Results r;
    add_vision(r, out.vision);
    r["logits_per_image"] = out.logits;
    r["logits_per_text"] = out.logits.t();
    r["qformer_last_hidden_state"] = out.qformer_last_hidden_state;
    return r;
  }

  Results itc(const Step& s) {
    auto out = model_->itc(in(s, "pixel_values"), in(s, "input_ids"), in(s, "attention_mask", false));
    Results r;
    r["image_embeds"] = out.image_embeds;
    r["text_embeds"] = out.text_embeds;
    r["logits_per_image"] = out.logits_per_image;
    r["logits_per_text"] = out.logits_per_image.t();
    r["text_last_hidden_state"] = out.text_last_hidden_state;
    return r;
  }

  Results qformer(const Step& s) {
    auto v = model_->encode_image(in(s, "pixel_values"), true);
    auto q = model_->query_image(v.last_hidden_state, true);
    Results r;
    add_qformer(r, q);
    return r;
  }

  Results vision_with_projection(const Step& s) {
    auto v = model_->encode_image(in(s, "pixel_values"));
    Results r;
    r["last_hidden_state"] = v.last_hidden_state;
    r["image_embeds"] = model_->image_features(v.last_hidden_state);
    return r;
  }

  Results text_with_projection(const Step& s) {
    auto [feats, h] = model_->text_features(in(s, "input_ids"), in(s, "attention_mask", false));
    Results r;
    r["last_hidden_state"] = h;
    r["text_embeds"] = feats;
    return r;
  }

  Blip2Model model_;
  std::map<std::string, torch::Tensor> inputs_;
};

json read_json(const fs::path& p);

// A LAVIS stage-1 Q-Former checkpoint (qformer_config.json = BertConfig +
// LAVIS's encoder_width / cross_attention_freq / query_length, weights with
// LAVIS names): a feature-only model with the retrieval and ITG heads.
Blip2Model load_lavis_qformer(const fs::path& dir, const json& meta, LoadReport* rep, torch::ScalarType dtype) {
  json q = read_json(dir / "qformer_config.json");
  auto store = io::TensorStore::open(dir.string());
  Blip2Config c;
  auto geti = [&](const char* k, int64_t& v) {
    if (q.contains(k) && q[k].is_number_integer()) v = q[k].get<int64_t>();
  };
  geti("vocab_size", c.qformer.vocab_size);
  geti("hidden_size", c.qformer.hidden_size);
  geti("num_hidden_layers", c.qformer.num_hidden_layers);
  geti("num_attention_heads", c.qformer.num_attention_heads);
  geti("intermediate_size", c.qformer.intermediate_size);
  geti("max_position_embeddings", c.qformer.max_position_embeddings);
  geti("cross_attention_freq", c.qformer.cross_attention_frequency);
  geti("encoder_width", c.qformer.encoder_hidden_size);
  geti("pad_token_id", c.qformer.pad_token_id);
  if (q.contains("layer_norm_eps")) c.qformer.layer_norm_eps = q["layer_norm_eps"].get<double>();
  if (q.contains("hidden_act")) c.qformer.hidden_act = q["hidden_act"].get<std::string>();
  c.qformer.use_qformer_text_input = true;
  c.vision.hidden_size = c.qformer.encoder_hidden_size;
  c.vision.num_attention_heads = 1;
  // LAVIS's ln_vision is torch's LayerNorm (eps 1e-5) unless the case says otherwise.
  c.vision.layer_norm_eps = meta.contains("dims") ? meta["dims"].value("ln_vision_eps", 1e-5) : 1e-5;
  c.num_query_tokens = store.info("query_tokens").shape.at(1);
  c.image_text_hidden_size = store.info("vision_proj.weight").shape.at(0);
  Blip2Parts parts;
  parts.language = false;
  parts.retrieval = true;
  parts.itg = true;
  parts.vision_tower = false;
  Blip2Model m(c, parts);
  m->eval();
  LoadOptions o;
  o.names = NameStyle::kLavis;
  o.dtype = dtype;
  load_weights(*m, store, o, rep);
  return m;
}

Blip2Model load_case_model(const fs::path& dir, const json& meta, LoadReport* rep, torch::ScalarType dtype) {
  if (!fs::exists(dir / "config.json") && fs::exists(dir / "qformer_config.json"))
    return load_lavis_qformer(dir, meta, rep, dtype);
  LoadOptions o;
  o.dtype = dtype;
  if (dtype != torch::kFloat) o.compute_dtype = torch::kFloat;
  return load_blip2(dir.string(), o, rep);
}

json read_json(const fs::path& p) {
  std::ifstream in(p);
  if (!in) throw Error("cannot read '" + p.string() + "'; a case directory holds meta.json");
  try {
    json j;
    in >> j;
    return j;
  } catch (const std::exception& e) {
    throw Error("'" + p.string() + "' is not valid JSON: " + e.what());
  }
}

// Compares one tensor; fills max_abs_diff, ok and note.
void compare(const torch::Tensor& got0, const torch::Tensor& want, VerifyLine& line) {
  const bool integer = !want.is_floating_point();
  const Tolerance tol = tolerance_for(line.name, integer);
  auto got = got0.detach().to(torch::kCPU);
  if (got.sizes() != want.sizes()) {
    line.ok = false;
    line.max_abs_diff = std::numeric_limits<double>::infinity();
    line.note = "shape " + shape_str(got.sizes().vec()) + ", expected " + shape_str(want.sizes().vec());
    return;
  }
  if (want.numel() == 0) {
    line.ok = true;
    return;
  }
  auto g = got.to(torch::kDouble), w = want.to(torch::kDouble);
  auto diff = (g - w).abs();
  line.max_abs_diff = diff.max().item<double>();
  if (std::isnan(line.max_abs_diff) || g.isnan().any().item<bool>() != w.isnan().any().item<bool>()) {
    line.ok = false;
    line.note = "NaN";
    return;
  }
  if (tol.exact) {
    line.ok = line.max_abs_diff == 0;
    if (!line.ok) line.note = "ids differ";
    return;
  }
  auto bound = tol.abs + tol.rel * w.abs();
  line.ok = (diff <= bound).all().item<bool>();
  if (!line.ok) {
    std::ostringstream os;
    os << "tolerance abs " << tol.abs << " + rel " << tol.rel;
    line.note = os.str();
  }
}

}  // namespace

VerifyResult verify_case(const std::string& case_dir, const VerifyOptions& options) {
  auto log = [&](const std::string& s) {
    if (options.verbose && options.log) options.log(s);
  };
  fs::path dir(case_dir);
  if (!fs::is_directory(dir)) throw Error("case directory '" + case_dir + "' does not exist");
  json meta = read_json(dir / "meta.json");
  if (!meta.contains("plan") || !meta["plan"].is_array())
    throw Error("'" + (dir / "meta.json").string() + "' has no \"plan\" list of operations to replay");
  for (const char* f : {"inputs.safetensors", "outputs.safetensors"})
    if (!fs::exists(dir / f)) throw Error("case directory '" + case_dir + "' lacks " + f);

  std::vector<Step> steps;
  for (const auto& j : meta["plan"]) {
    Step s;
    s.op = j.value("op", "");
    s.prefixes = output_prefixes(j.value("outputs", ""));
    if (j.contains("inputs") && j["inputs"].is_object())
      for (auto it = j["inputs"].begin(); it != j["inputs"].end(); ++it)
        if (it.value().is_string()) s.inputs[it.key()] = it.value().get<std::string>();
    s.params = j.contains("params") ? j["params"] : json::object();
    steps.push_back(std::move(s));
  }

  auto inputs = io::load_safetensors((dir / "inputs.safetensors").string());
  auto outputs = io::load_safetensors((dir / "outputs.safetensors").string());

  VerifyResult result;
  std::vector<Results> produced(steps.size());
  std::vector<std::string> errors(steps.size());
  bool needs_model = false;
  for (const auto& s : steps) needs_model |= s.op != "shift_right";
  std::unique_ptr<Replayer> replayer;
  if (needs_model) {
    LoadReport rep;
    try {
      auto model = load_case_model(dir, meta, &rep, parse_weight_dtype(options.dtype, "verify --dtype"));
      result.load_seconds = rep.seconds;
      std::ostringstream os;
      os << "loaded " << rep.checkpoint << ": " << rep.tensors << " tensors (" << rep.zero_copy
         << " zero-copy), " << rep.file_bytes / 1024 << " KiB in " << rep.seconds * 1000 << " ms; resident memory "
         << rep.rss_before_kb / 1024 << " -> " << rep.rss_after_kb / 1024 << " MiB";
      log(os.str());
      replayer = std::make_unique<Replayer>(model, inputs, outputs);
    } catch (const Error& e) {
      for (auto& err : errors) err = std::string("model load failed: ") + e.what();
    }
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    if (!errors[i].empty()) continue;
    auto t0 = std::chrono::steady_clock::now();
    try {
      if (!replayer) throw Error("no model");
      produced[i] = replayer->run(steps[i]);
    } catch (const std::exception& e) {
      errors[i] = e.what();
    }
    const double ms = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1000;
    std::ostringstream os;
    os << "op " << i << " " << steps[i].op << ": " << ms << " ms" << (errors[i].empty() ? "" : " (failed)");
    log(os.str());
  }

  for (const auto& [name, want] : outputs) {
    VerifyLine line;
    line.name = name;
    bool covered = false, checked = false;
    std::string why;
    auto check_with = [&](const torch::Tensor& got) {
      VerifyLine l;
      l.name = name;
      compare(got, want, l);
      // Keep the worst result when several operations check the same tensor.
      if (!checked || (line.ok && (!l.ok || l.max_abs_diff > line.max_abs_diff))) line = l;
      checked = true;
    };
    for (size_t i = 0; i < steps.size(); ++i) {
      for (const auto& p : steps[i].prefixes) {
        if (!covers(p, name)) continue;
        covered = true;
        if (!errors[i].empty()) {
          why = "op " + steps[i].op + " failed: " + errors[i];
          continue;
        }
        const auto& r = produced[i];
        if (r.count(name)) check_with(r.at(name));
        else if (name.size() > p.size() && r.count(name.substr(p.size() + 1))) check_with(r.at(name.substr(p.size() + 1)));
        else if (name == p && r.count("")) check_with(r.at(""));
        else why = "op " + steps[i].op + " did not produce it";
      }
    }
    if (!covered) {
      // Side outputs of an op (e.g. vision.* of the ITM call) by absolute name.
      for (size_t i = 0; i < steps.size(); ++i)
        if (produced[i].count(name)) {
          check_with(produced[i].at(name));
          covered = true;
        }
    }
    if (!checked) {
      line.ok = false;
      line.max_abs_diff = std::numeric_limits<double>::infinity();
      line.note = covered ? why : "no plan operation produces it (unchecked)";
    }
    if (options.dtype == "int8" && checked && line.max_abs_diff < std::numeric_limits<double>::infinity() &&
        line.note != "NaN") {
      line.note = line.ok ? "int8: within the float tolerance" : "int8: reported, not held to the float tolerance";
      line.ok = true;
    }
    (line.ok ? result.passed : result.failed) += 1;
    result.lines.push_back(line);
  }
  return result;
}

}  // namespace blip2
