#include "blip2/model/generation.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "blip2/lm/language_model.h"
#include "blip2/util/error.h"

namespace blip2 {

void GenerationConfig::validate() const {
  auto bad = [](const std::string& what) { throw ConfigError("generation option " + what); };
  if (max_new_tokens < 1) bad("max_new_tokens must be at least 1, got " + std::to_string(max_new_tokens));
  if (min_new_tokens < 0 || min_new_tokens > max_new_tokens)
    bad("min_new_tokens must be in [0, max_new_tokens=" + std::to_string(max_new_tokens) + "], got " +
        std::to_string(min_new_tokens));
  if (num_beams < 1) bad("num_beams must be at least 1, got " + std::to_string(num_beams));
  if (num_return_sequences < 1) bad("num_return_sequences must be at least 1");
  if (!do_sample && num_return_sequences > num_beams)
    bad("num_return_sequences (" + std::to_string(num_return_sequences) + ") must not exceed num_beams (" +
        std::to_string(num_beams) + ") without sampling");
  if (do_sample && num_beams > 1) bad("do_sample with num_beams > 1 (beam sampling) is not supported");
  if (!(temperature > 0) || !std::isfinite(temperature))
    bad("temperature must be positive and finite, got " + std::to_string(temperature));
  if (!std::isfinite(length_penalty)) bad("length_penalty must be finite, got " + std::to_string(length_penalty));
  if (top_k < 0) bad("top_k must be >= 0");
  if (!(top_p > 0 && top_p <= 1)) bad("top_p must be in (0, 1], got " + std::to_string(top_p));
  if (!(repetition_penalty > 0) || !std::isfinite(repetition_penalty))
    bad("repetition_penalty must be positive and finite, got " + std::to_string(repetition_penalty));
  if (no_repeat_ngram_size < 0) bad("no_repeat_ngram_size must be >= 0");
}

namespace {

// NaN or Inf logits mean NaN/Inf weights (or a 16-bit overflow): decoding them
// would print garbage ("$$$$$") as if it were a caption. Costs one pass over
// (rows, vocab) per step, nothing next to the step itself.
void check_finite_logits(const torch::Tensor& logits, int64_t step) {
  if (!torch::isfinite(logits).all().item<bool>())
    throw CheckpointError("the language model's logits at generation step " + std::to_string(step) +
                          " are not finite (NaN or Inf): the checkpoint holds non-finite weights, or a 16-bit dtype "
                          "overflowed; try --dtype float32, else re-export the checkpoint");
}


constexpr float kNegInf = -std::numeric_limits<float>::infinity();

struct Processors {
  const GenerationConfig& cfg;
  int64_t eos;
  int64_t prompt_len;  // tokens of `ids` that were not generated (the decoder prefix)

  // scores (N, V) for the next token after ids (N, cur): HF's order
  // repetition penalty, no-repeat-ngram, min length.
  torch::Tensor apply(const torch::Tensor& ids, torch::Tensor scores) const {
    scores = scores.clone();  // never write into the caller's (raw) logits
    if (cfg.repetition_penalty != 1.0 && ids.size(1) > 0) {
      auto s = scores.gather(1, ids);
      s = torch::where(s < 0, s * cfg.repetition_penalty, s / cfg.repetition_penalty);
      scores = scores.scatter(1, ids, s);
    }
    const int64_t n = cfg.no_repeat_ngram_size;
    if (n > 0 && ids.size(1) + 1 >= n) {
      auto acc = ids.to(torch::kCPU).contiguous();
      const int64_t N = acc.size(0), L = acc.size(1);
      const int64_t* p = acc.data_ptr<int64_t>();
      for (int64_t r = 0; r < N; ++r) {
        const int64_t* row = p + r * L;
        for (int64_t start = 0; start + n <= L; ++start) {
          bool match = true;
          for (int64_t j = 0; j < n - 1 && match; ++j) match = row[start + j] == row[L - n + 1 + j];
          if (match) scores[r][row[start + n - 1]] = kNegInf;
        }
      }
    }
    if (ids.size(1) - prompt_len < cfg.min_new_tokens) scores.select(1, eos).fill_(kNegInf);
    return scores;
  }

  // Sampling warpers: temperature, top-k, top-p.
  torch::Tensor warp(torch::Tensor scores) const {
    if (cfg.temperature != 1.0) scores = scores / cfg.temperature;
    const int64_t V = scores.size(1);
    if (cfg.top_k > 0 && cfg.top_k < V) {
      auto kth = std::get<0>(scores.topk(cfg.top_k, 1)).select(1, cfg.top_k - 1).unsqueeze(1);
      scores = scores.masked_fill(scores < kth, kNegInf);
    }
    if (cfg.top_p < 1.0) {
      auto sorted = scores.sort(1, false);
      auto vals = std::get<0>(sorted), idx = std::get<1>(sorted);
      auto cum = vals.softmax(1).cumsum(1);
      auto remove = cum <= (1 - cfg.top_p);
      remove.select(1, V - 1).fill_(false);  // keep at least one
      scores = scores.masked_fill(remove.scatter(1, idx, remove), kNegInf);
    }
    return scores;
  }
};

// Tells the callback each unfinished row's new token; (N,) 1 where it asked to stop.
torch::Tensor report_step(const TokenCallback& on_tokens, const torch::Tensor& next, const torch::Tensor& unfinished) {
  auto tokens = next.to(torch::kCPU).contiguous(), open = unfinished.to(torch::kCPU).contiguous();
  auto stopped = torch::zeros_like(open);
  const int64_t* t = tokens.data_ptr<int64_t>();
  const int64_t* u = open.data_ptr<int64_t>();
  int64_t* s = stopped.data_ptr<int64_t>();
  for (int64_t r = 0; r < tokens.size(0); ++r)
    if (u[r] != 0 && !on_tokens(r, {t[r]})) s[r] = 1;
  return stopped;
}

GenerationOutput greedy_or_sample(LanguageModel& lm, const torch::Tensor& embeds, const torch::Tensor& mask,
                                  const GenerationConfig& cfg, int64_t eos, int64_t pad) {
  const int64_t R = cfg.do_sample ? cfg.num_return_sequences : 1;
  auto e = R > 1 ? embeds.repeat_interleave(R, 0) : embeds;
  auto m = R > 1 ? mask.repeat_interleave(R, 0) : mask;
  const int64_t N = e.size(0);
  auto lo = torch::TensorOptions().dtype(torch::kLong).device(e.device());
  auto prefix = lm.decoder_prefix();
  auto ids = torch::tensor(prefix, lo).view({1, -1}).expand({N, -1}).clone();
  if (prefix.empty()) ids = torch::empty({N, 0}, lo);
  const int64_t prompt_len = ids.size(1);
  Processors proc{cfg, eos, prompt_len};
  torch::Generator gen;
  if (cfg.do_sample) {
    gen = at::detail::createCPUGenerator(cfg.seed);
  }
  torch::Tensor logits;
  auto state = lm.start(e, m, &logits);
  auto unfinished = torch::ones({N}, lo);
  std::vector<torch::Tensor> raw;
  for (int64_t t = 0; t < cfg.max_new_tokens; ++t) {
    check_finite_logits(logits, t);
    if (cfg.output_logits) raw.push_back(logits.to(torch::kFloat));
    auto scores = proc.apply(ids, logits.to(torch::kFloat));
    torch::Tensor next;
    if (cfg.do_sample) {
      auto probs = proc.warp(scores).softmax(1);
      next = at::multinomial(probs.to(torch::kCPU), 1, false, gen).view({-1}).to(e.device());
    } else {
      next = scores.argmax(1);
    }
    next = next * unfinished + pad * (1 - unfinished);
    ids = torch::cat({ids, next.unsqueeze(1)}, 1);
    torch::Tensor stopped;
    if (cfg.on_tokens) stopped = report_step(cfg.on_tokens, next, unfinished);
    unfinished = unfinished * (next != eos).to(torch::kLong);
    if (stopped.defined()) unfinished = unfinished * (1 - stopped.to(unfinished.device()));
    if (unfinished.max().item<int64_t>() == 0 || t + 1 == cfg.max_new_tokens) break;
    logits = lm.step(*state, next);
  }
  GenerationOutput out;
  out.sequences = ids;
  if (cfg.output_logits) out.step_logits = torch::stack(raw, 1);
  return out;
}

struct Hypothesis {
  double score;
  std::vector<int64_t> tokens;
};

// HF BeamHypotheses.
struct BeamHyps {
  int64_t num_beams;
  double length_penalty;
  EarlyStopping early;
  int64_t max_length;
  std::vector<Hypothesis> beams;
  double worst = 1e9;

  void add(std::vector<int64_t> tokens, double sum_logprobs, int64_t generated_len) {
    const double score = sum_logprobs / std::pow(static_cast<double>(generated_len), length_penalty);
    if (static_cast<int64_t>(beams.size()) < num_beams || score > worst) {
      beams.push_back({score, std::move(tokens)});
      if (static_cast<int64_t>(beams.size()) > num_beams) {
        // Drop the worst; the new worst is the second worst. Stable on ties
        // like Python's sorted over (score, index).
        std::vector<std::pair<double, size_t>> order;
        for (size_t i = 0; i < beams.size(); ++i) order.emplace_back(beams[i].score, i);
        std::sort(order.begin(), order.end());
        beams.erase(beams.begin() + static_cast<std::ptrdiff_t>(order[0].second));
        worst = order[1].first;
      } else {
        worst = std::min(score, worst);
      }
    }
  }

  bool is_done(double best_sum_logprobs, int64_t cur_len, int64_t prompt_len) const {
    if (static_cast<int64_t>(beams.size()) < num_beams) return false;
    if (early == EarlyStopping::kFirst) return true;
    double highest;
    if (early == EarlyStopping::kNever && length_penalty > 0.0)
      highest = best_sum_logprobs / std::pow(static_cast<double>(max_length - prompt_len), length_penalty);
    else
      highest = best_sum_logprobs / std::pow(static_cast<double>(cur_len - prompt_len), length_penalty);
    return worst >= highest;
  }
};

GenerationOutput beam_search(LanguageModel& lm, const torch::Tensor& embeds, const torch::Tensor& mask,
                             const GenerationConfig& cfg, int64_t eos, int64_t pad) {
  const int64_t B = embeds.size(0), K = cfg.num_beams;
  auto e = embeds.repeat_interleave(K, 0);
  auto m = mask.repeat_interleave(K, 0);
  auto lo = torch::TensorOptions().dtype(torch::kLong);
  auto prefix = lm.decoder_prefix();
  const int64_t prompt_len = static_cast<int64_t>(prefix.size());
  const int64_t max_length = prompt_len + cfg.max_new_tokens;
  // Sequences are kept on the CPU: the bookkeeping is scalar.
  std::vector<std::vector<int64_t>> seqs(B * K, prefix);
  auto beam_scores = torch::zeros({B, K}, torch::kFloat);
  beam_scores.slice(1, 1, K).fill_(-1e9);
  beam_scores = beam_scores.view({-1});
  std::vector<BeamHyps> hyps(B, BeamHyps{K, cfg.length_penalty, cfg.early_stopping, max_length, {}, 1e9});
  std::vector<bool> done(B, false), cancelled(B, false);
  Processors proc{cfg, eos, prompt_len};
  const int64_t R = cfg.num_return_sequences;

  torch::Tensor logits;
  auto state = lm.start(e, m, &logits);
  int64_t cur_len = prompt_len;
  while (true) {
    if (cfg.on_tokens) {  // an input stops when every one of its rows asks
      for (int64_t b = 0; b < B; ++b) {
        if (done[b]) continue;
        bool wanted = false;
        for (int64_t j = 0; j < R; ++j) wanted = cfg.on_tokens(b * R + j, {}) || wanted;
        if (!wanted) done[b] = cancelled[b] = true;
      }
      if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    }
    check_finite_logits(logits, cur_len - prompt_len);
    auto ids_t = torch::empty({B * K, cur_len}, lo);
    for (int64_t r = 0; r < B * K; ++r)
      for (int64_t j = 0; j < cur_len; ++j) ids_t[r][j] = seqs[r][j];
    auto scores = torch::log_softmax(logits.to(torch::kFloat).to(torch::kCPU), -1);
    scores = proc.apply(ids_t, scores);
    scores = scores + beam_scores.unsqueeze(1);
    const int64_t V = scores.size(1);
    auto flat = scores.view({B, K * V});
    auto top = flat.topk(2 * K, 1, true, true);
    auto top_scores = std::get<0>(top).contiguous(), top_idx = std::get<1>(top).contiguous();
    const float* ts = top_scores.data_ptr<float>();
    const int64_t* ti = top_idx.data_ptr<int64_t>();

    auto next_scores = torch::zeros({B * K}, torch::kFloat);
    std::vector<int64_t> next_tokens(B * K, pad), next_src(B * K, 0);
    float* ns = next_scores.data_ptr<float>();
    const int64_t step_len = cur_len + 1;  // HF: input_ids.shape[-1] + 1
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) {
        for (int64_t k = 0; k < K; ++k) {
          ns[b * K + k] = 0;
          next_tokens[b * K + k] = pad;
          next_src[b * K + k] = 0;
        }
        continue;
      }
      int64_t filled = 0;
      float best = -std::numeric_limits<float>::infinity();
      for (int64_t rank = 0; rank < 2 * K; ++rank) best = std::max(best, ts[b * 2 * K + rank]);
      for (int64_t rank = 0; rank < 2 * K && filled < K; ++rank) {
        const int64_t idx = ti[b * 2 * K + rank];
        const int64_t beam = idx / V, token = idx % V;
        const int64_t src = b * K + beam;
        const float sc = ts[b * 2 * K + rank];
        if (token == eos) {
          if (rank >= K) continue;
          hyps[b].add(seqs[src], static_cast<double>(sc), step_len - prompt_len);
        } else {
          ns[b * K + filled] = sc;
          next_tokens[b * K + filled] = token;
          next_src[b * K + filled] = src;
          ++filled;
        }
      }
      done[b] = done[b] || hyps[b].is_done(static_cast<double>(best), step_len, prompt_len);
    }
    beam_scores = next_scores;
    std::vector<std::vector<int64_t>> new_seqs(B * K);
    for (int64_t r = 0; r < B * K; ++r) {
      new_seqs[r] = seqs[next_src[r]];
      new_seqs[r].push_back(next_tokens[r]);
    }
    seqs = std::move(new_seqs);
    cur_len += 1;
    const bool all_done = std::all_of(done.begin(), done.end(), [](bool d) { return d; });
    if (all_done || cur_len >= max_length) break;
    auto src_t = torch::tensor(next_src, lo).to(e.device());
    lm.select(*state, src_t);
    logits = lm.step(*state, torch::tensor(next_tokens, lo).to(e.device()));
  }

  // Finalize: open beams of unfinished rows become hypotheses.
  for (int64_t b = 0; b < B; ++b) {
    if (done[b] && !cancelled[b]) continue;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = b * K + k;
      hyps[b].add(seqs[r], static_cast<double>(beam_scores[r].item<float>()),
                  static_cast<int64_t>(seqs[r].size()) - prompt_len);
    }
  }
  std::vector<std::vector<int64_t>> best;
  std::vector<float> best_scores;
  for (int64_t b = 0; b < B; ++b) {
    auto sorted = hyps[b].beams;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const Hypothesis& a, const Hypothesis& c) { return a.score < c.score; });
    for (int64_t j = 0; j < R; ++j) {
      best.push_back(sorted.back().tokens);
      best_scores.push_back(static_cast<float>(sorted.back().score));
      sorted.pop_back();
    }
  }
  size_t longest = 0, shortest = SIZE_MAX;
  for (const auto& s : best) {
    longest = std::max(longest, s.size());
    shortest = std::min(shortest, s.size());
  }
  const int64_t width = std::min<int64_t>(static_cast<int64_t>(longest) + 1, max_length);
  auto seq = torch::full({static_cast<int64_t>(best.size()), width}, shortest != longest ? pad : 0, lo);
  for (size_t i = 0; i < best.size(); ++i) {
    for (size_t j = 0; j < best[i].size(); ++j) seq[i][j] = best[i][j];
    if (static_cast<int64_t>(best[i].size()) < width) seq[i][best[i].size()] = eos;
  }
  if (cfg.on_tokens) {
    for (size_t i = 0; i < best.size(); ++i) {
      if (cancelled[static_cast<int64_t>(i) / R]) continue;
      std::vector<int64_t> tokens(best[i].begin() + prompt_len, best[i].end());
      if (static_cast<int64_t>(best[i].size()) < width) tokens.push_back(eos);
      cfg.on_tokens(static_cast<int64_t>(i), tokens);
    }
  }
  GenerationOutput out;
  out.sequences = seq.to(embeds.device());
  out.sequences_scores = torch::tensor(best_scores, torch::kFloat).to(embeds.device());
  return out;
}

}  // namespace

GenerationOutput generate(LanguageModel& lm, const torch::Tensor& inputs_embeds, const torch::Tensor& attention_mask,
                          const GenerationConfig& config, int64_t default_eos, int64_t default_pad) {
  config.validate();
  torch::NoGradGuard no_grad;
  const int64_t eos = config.eos_token_id.value_or(default_eos);
  const int64_t pad = config.pad_token_id.value_or(default_pad);
  if (eos < 0 || eos >= lm.vocab_size())
    throw ConfigError("generation option eos_token_id " + std::to_string(eos) + " is outside the vocabulary (size " +
                      std::to_string(lm.vocab_size()) + ")");
  if (config.num_beams > 1) return beam_search(lm, inputs_embeds, attention_mask, config, eos, pad);
  return greedy_or_sample(lm, inputs_embeds, attention_mask, config, eos, pad);
}

}  // namespace blip2
