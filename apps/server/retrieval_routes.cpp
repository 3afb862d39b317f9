// POST /v1/embeddings, /v1/match, /v1/search: the retrieval heads (ITC
// embeddings, ITM match probabilities) and collection search. They run one
// at a time on the caller's thread under the compute lock, with the same
// per-request timeout as generation.
#include <torch/torch.h>

#include <sstream>

#include "apps/server/service.h"
#include "blip2/data/tokenizer.h"

namespace blip2::server {

using nlohmann::json;

namespace {
Pipeline& retrieval_model(Service& s) {
  if (!s.retrieval)
    throw ApiError(400, "this server has no retrieval model; start it with --retrieval-model DIR "
                        "(e.g. models/shapes/retrieval)");
  return *s.retrieval;
}

std::unique_lock<std::timed_mutex> compute_lock(Service& s, Clock::time_point t0) {
  std::unique_lock<std::timed_mutex> lock(s.compute, std::defer_lock);
  if (!lock.try_lock_until(s.deadline_from(t0)))
    throw ApiError(504, "the model stayed busy past the server's timeout of " + json(s.options.timeout_s).dump() + " s");
  return lock;
}

std::vector<float> to_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// An image from the multipart file or the JSON field, if one was sent.
bool has_image(const Fields& f) { return f.image_bytes.has_value() || f.has("image"); }
}  // namespace

void add_retrieval_routes(httplib::Server& http, Service& s) {
  add_route(http, s, "POST", "/v1/embeddings", Access::kKey, [&s](const httplib::Request& req, httplib::Response& res, auto) {
    const auto t0 = Clock::now();
    const Fields f = read_fields(req);
    f.allow_only({"image", "text"}, "/v1/embeddings");
    Pipeline& p = retrieval_model(s);
    const bool image = has_image(f);
    if (image == f.has("text")) throw ApiError(400, "give exactly one of the fields 'image' and 'text'");
    if (image) {
      Image img = image_of(f, s.decode_options());
      auto lock = compute_lock(s, t0);
      auto e = p.image_embedding(img);  // (Q, E)
      json rows = json::array();
      for (int64_t q = 0; q < e.size(0); ++q) rows.push_back(to_vector(e[q]));
      send_json(res, {{"kind", "image"}, {"embedding", rows}});
    } else {
      const std::string text = bounded_text(*f.text("text"), "field 'text'", s.options.max_prompt_chars);
      auto lock = compute_lock(s, t0);
      send_json(res, {{"kind", "text"}, {"embedding", to_vector(p.text_embedding(text))}});
    }
  });

  add_route(http, s, "POST", "/v1/match", Access::kKey, [&s](const httplib::Request& req, httplib::Response& res, auto) {
    const auto t0 = Clock::now();
    const Fields f = read_fields(req);
    f.allow_only({"image", "texts"}, "/v1/match");
    Pipeline& p = retrieval_model(s);
    std::vector<std::string> texts;
    if (f.multipart && f.has("texts")) {  // one text per line in a form
      std::string all = *f.text("texts"), line;
      std::istringstream in(all);
      while (std::getline(in, line))
        if (!text::py_strip(line).empty()) texts.push_back(line);
    } else {
      if (!f.has("texts") || !f.json["texts"].is_array())
        throw ApiError(400, "field 'texts' is required: an array of strings");
      for (const auto& t : f.json["texts"]) {
        if (!t.is_string()) throw ApiError(400, "field 'texts' must hold only strings");
        texts.push_back(t);
      }
    }
    if (texts.empty() || static_cast<int>(texts.size()) > s.options.max_texts)
      throw ApiError(400, "field 'texts' must hold 1 to " + std::to_string(s.options.max_texts) + " texts, got " +
                              std::to_string(texts.size()));
    for (size_t i = 0; i < texts.size(); ++i)
      bounded_text(texts[i], "texts[" + std::to_string(i) + "]", s.options.max_prompt_chars);
    Image img = image_of(f, s.decode_options());
    auto lock = compute_lock(s, t0);
    // ITC: the image's query features once, each text's [CLS] feature, max over queries of the cosines.
    const auto features = p.image_embedding(img);  // (Q, E), L2-normalised
    json results = json::array();
    for (const auto& t : texts) {
      const double itc = features.matmul(p.text_embedding(t)).max().item<double>();
      results.push_back({{"text", t}, {"itm_probability", p.match(img, t)}, {"itc_cosine", itc}});
    }
    send_json(res, {{"results", results}});
  });

  add_route(http, s, "POST", "/v1/search", Access::kKey, [&s](const httplib::Request& req, httplib::Response& res, auto) {
    const auto t0 = Clock::now();
    const Fields f = read_fields(req);
    f.allow_only({"image", "text", "k"}, "/v1/search");
    if (!s.collection) throw ApiError(400, "this server has no index; start it with --index DIR (blip2 index build)");
    const bool image = has_image(f);
    if (image == f.has("text")) throw ApiError(400, "give exactly one of the fields 'image' and 'text'");
    search::SearchOptions o;
    if (auto k = f.integer("k", 1, 1000)) o.k = *k;
    std::vector<search::SearchHit> hits;
    if (image) {
      Image img = image_of(f, s.decode_options());
      auto lock = compute_lock(s, t0);
      hits = s.collection->search(img, o);
    } else {
      const std::string text = bounded_text(*f.text("text"), "field 'text'", s.options.max_prompt_chars);
      auto lock = compute_lock(s, t0);
      hits = s.collection->search(text, o);
    }
    json results = json::array();
    for (const auto& h : hits)
      results.push_back({{"path", h.path}, {"score", h.score}, {"itc_cosine", h.itc},
                         {"itm_probability", h.itm ? json(*h.itm) : json(nullptr)}});
    send_json(res, {{"results", results}});
  });
}

}  // namespace blip2::server
