// blip2 serve end to end, endpoints and errors: a real server process on
// loopback with the bundled shapes models, spoken to over HTTP. Batching,
// streaming, limits under load and shutdown are in server_load_test.cpp.
#include <gtest/gtest.h>

#include "image_fixtures.h"
#include "server_process.h"

namespace blip2 {
namespace {

using nlohmann::json;
using test::data_uri;
using test::png_bytes;
using test::ServerProcess;

// One server for the whole suite (loading is the slow part).
class ServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new ServerProcess({"-m", test::bundled_model("opt"), "--retrieval-model", test::bundled_model("retrieval"),
                                 "--threads", "1"});
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { ASSERT_TRUE(server_->ready()) << server_->stderr_text(); }

  static json post(const std::string& path, const json& body, int expect_status) {
    auto c = server_->client();
    auto r = c.Post(path.c_str(), body.dump(), "application/json");
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, expect_status) << path << ": " << r->body;
    EXPECT_NE(r->get_header_value("Content-Type").find("application/json"), std::string::npos);
    return json::parse(r->body);
  }
  // The error message of a request that must fail with `status`.
  static std::string error_of(const std::string& path, const json& body, int status) {
    json j = post(path, body, status);
    EXPECT_TRUE(j.contains("error")) << j.dump();
    if (!j.contains("error")) return "";
    EXPECT_TRUE(j["error"]["type"].is_string());
    return j["error"]["message"].get<std::string>();
  }

  static ServerProcess* server_;
};
ServerProcess* ServerTest::server_ = nullptr;

#define EXPECT_HAS(haystack, needle) EXPECT_NE((haystack).find(needle), std::string::npos) << (haystack)

TEST_F(ServerTest, HealthReportsTheModelAndItsCapabilities) {
  auto r = server_->client().Get("/health");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  json j = json::parse(r->body);
  EXPECT_EQ(j["status"], "ok");
  EXPECT_EQ(j["model"], "opt");
  EXPECT_EQ(j["capabilities"]["generate"], true);
  EXPECT_EQ(j["capabilities"]["retrieval"], true);
  EXPECT_EQ(j["capabilities"]["search"], false);
  EXPECT_EQ(j["queue_depth"], 0);
}

TEST_F(ServerTest, ModelsListsBothModelsInOpenAiShape) {
  auto r = server_->client().Get("/v1/models");
  ASSERT_TRUE(r);
  json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "list");
  ASSERT_EQ(j["data"].size(), 2u);
  EXPECT_EQ(j["data"][0]["id"], "opt");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][1]["id"], "retrieval");
  EXPECT_GT(j["data"][0]["created"].get<int64_t>(), 0);
}

TEST_F(ServerTest, CaptionMatchesTheCliOnTheSameImage) {
  test::TempDir dir;
  const std::string png = png_bytes(1);
  std::ofstream(dir.file("a.png"), std::ios::binary) << png;
  auto cli = test::run_cli("caption --json --threads 1 -m " + test::q(test::bundled_model("opt")) + " " + test::q(dir.file("a.png")));
  ASSERT_EQ(cli.code, 0) << cli.err;
  json expected = json::parse(cli.out);
  json j = post("/v1/caption", {{"image", data_uri(png)}}, 200);
  EXPECT_EQ(j["text"], expected["text"]);
  EXPECT_EQ(j["tokens"], expected["token_ids"]);
  EXPECT_FALSE(j["text"].get<std::string>().empty());
  for (const char* t : {"queue_ms", "compute_ms", "total_ms"}) EXPECT_GE(j["timings"][t].get<double>(), 0) << t;
  // Plain base64 and a multipart upload give the same caption.
  EXPECT_EQ(post("/v1/caption", {{"image", test::base64(png)}}, 200)["text"], expected["text"]);
  httplib::MultipartFormDataItems form = {{"image", png, "a.png", "image/png"}};
  auto r = server_->client().Post("/v1/caption", form);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["text"], expected["text"]);
}

TEST_F(ServerTest, AnswerMatchesTheCliAndAcceptsOptions) {
  test::TempDir dir;
  const std::string png = png_bytes(2);
  std::ofstream(dir.file("a.png"), std::ios::binary) << png;
  auto cli = test::run_cli("ask --json --threads 1 -m " + test::q(test::bundled_model("opt")) + " " + test::q(dir.file("a.png")) +
                           " 'what shape is it?' --beams 1 --max-new-tokens 5");
  ASSERT_EQ(cli.code, 0) << cli.err;
  json expected = json::parse(cli.out);
  json j = post("/v1/answer", {{"image", data_uri(png)}, {"question", "what shape is it?"}, {"num_beams", 1},
                               {"max_tokens", 5}}, 200);
  EXPECT_EQ(j["text"], expected["text"]);
  EXPECT_EQ(j["tokens"], expected["token_ids"]);
  httplib::MultipartFormDataItems form = {{"image", png, "a.png", "image/png"},
                                          {"question", "what shape is it?", "", ""},
                                          {"num_beams", "1", "", ""},
                                          {"max_tokens", "5", "", ""}};
  auto r = server_->client().Post("/v1/answer", form);
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["text"], expected["text"]) << r->body;
}

TEST_F(ServerTest, ChatCompletionAnswersTheLastUserMessageLikeAnswer) {
  const std::string png = png_bytes(3);
  json answer = post("/v1/answer", {{"image", data_uri(png)}, {"question", "what color is it?"}}, 200);
  json body = {{"model", "opt"},
               {"messages",
                {{{"role", "system"}, {"content", "You describe images."}},
                 {{"role", "user"},
                  {"content",
                   {{{"type", "text"}, {"text", "what color is it?"}},
                    {{"type", "image_url"}, {"image_url", {{"url", data_uri(png)}}}}}}}}}};
  json j = post("/v1/chat/completions", body, 200);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "opt");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], answer["text"]);
  EXPECT_TRUE(j["choices"][0]["finish_reason"] == "stop" || j["choices"][0]["finish_reason"] == "length");
  const auto& u = j["usage"];
  json config;
  std::ifstream(test::bundled_model("opt") + "/config.json") >> config;
  // The query tokens, BOS and "Question: what color is it? Answer:" (more than 5 tokens).
  EXPECT_GT(u["prompt_tokens"].get<int>(), config["num_query_tokens"].get<int>() + 5);
  EXPECT_GE(u["completion_tokens"].get<int>(), 1);
  EXPECT_EQ(u["total_tokens"], u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
}

TEST_F(ServerTest, ChatWithoutTextCaptionsAndHonoursNMaxTokensAndStop) {
  const std::string png = png_bytes(4);
  json caption = post("/v1/caption", {{"image", data_uri(png)}}, 200);
  json msg = {{{"role", "user"}, {"content", {{{"type", "image_url"}, {"image_url", {{"url", data_uri(png)}}}}}}}};
  json j = post("/v1/chat/completions", {{"messages", msg}}, 200);
  EXPECT_EQ(j["choices"][0]["message"]["content"], caption["text"]);
  // n sequences of at most 2 tokens, by greedy beam search.
  json two = post("/v1/chat/completions", {{"messages", msg}, {"n", 2}, {"max_tokens", 2}}, 200);
  ASSERT_EQ(two["choices"].size(), 2u);
  EXPECT_EQ(two["choices"][1]["index"], 1);
  EXPECT_LE(two["usage"]["completion_tokens"].get<int>(), 4);
  // A stop string cuts the text before it.
  const std::string text = caption["text"];
  ASSERT_GE(text.size(), 3u);
  const std::string stop = text.substr(2, 1);
  json cut = post("/v1/chat/completions", {{"messages", msg}, {"stop", {stop}}}, 200);
  EXPECT_EQ(cut["choices"][0]["message"]["content"], text.substr(0, text.find(stop)));
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
}

TEST_F(ServerTest, EmbeddingsAreUnitVectorsInItcSpace) {
  json img = post("/v1/embeddings", {{"image", data_uri(png_bytes(5))}}, 200);
  EXPECT_EQ(img["kind"], "image");
  ASSERT_GT(img["embedding"].size(), 1u);  // one per query token
  json txt = post("/v1/embeddings", {{"text", "a red circle"}}, 200);
  EXPECT_EQ(txt["kind"], "text");
  const auto v = txt["embedding"].get<std::vector<double>>();
  EXPECT_EQ(v.size(), img["embedding"][0].size());
  double norm = 0;
  for (double x : v) norm += x * x;
  EXPECT_NEAR(norm, 1.0, 1e-4);
}

TEST_F(ServerTest, MatchScoresEveryTextWithProbabilitiesAndCosines) {
  json j = post("/v1/match", {{"image", data_uri(png_bytes(6))}, {"texts", {"a red square", "a blue star"}}}, 200);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][1]["text"], "a blue star");
  for (const auto& r : j["results"]) {
    EXPECT_GE(r["itm_probability"].get<double>(), 0.0);
    EXPECT_LE(r["itm_probability"].get<double>(), 1.0);
    EXPECT_GE(r["itc_cosine"].get<double>(), -1.0);
    EXPECT_LE(r["itc_cosine"].get<double>(), 1.0);
  }
}

TEST_F(ServerTest, SearchWithoutAnIndexSaysHowToGetOne) {
  EXPECT_HAS(error_of("/v1/search", {{"text", "a circle"}}, 400), "--index");
}

TEST_F(ServerTest, SearchRanksAnIndexedCollectionByTextAndByImage) {
  test::TempDir images, index;
  for (int i = 0; i < 3; ++i)
    std::ofstream(images.file("s" + std::to_string(i) + ".png"), std::ios::binary) << png_bytes(80 + i);
  auto built = test::run_cli("index build --threads 1 --model " + test::q(test::bundled_model("retrieval")) +
                             " --images " + test::q(images.path()) + " --out " + test::q(index.file("idx")));
  ASSERT_EQ(built.code, 0) << built.err;
  // No --retrieval-model: the index names the model it was built with.
  ServerProcess s({"-m", test::bundled_model("opt"), "--index", index.file("idx"), "--threads", "1"});
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  auto health = s.client().Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(json::parse(health->body)["capabilities"]["search"], true);
  auto r = s.client().Post("/v1/search", json{{"text", "a shape"}, {"k", 2}}.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_GE(j["results"][0]["score"].get<double>(), j["results"][1]["score"].get<double>());
  EXPECT_TRUE(j["results"][0]["itm_probability"].is_number());
  // By image: the image itself comes first.
  r = s.client().Post("/v1/search", json{{"image", data_uri(png_bytes(81))}}.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  j = json::parse(r->body);
  ASSERT_EQ(j["results"].size(), 3u);
  EXPECT_NE(j["results"][0]["path"].get<std::string>().find("s1.png"), std::string::npos) << j.dump();
  EXPECT_TRUE(j["results"][0]["itm_probability"].is_null());
}

TEST_F(ServerTest, MetricsCountRequestsAndBatchesInPrometheusText) {
  post("/v1/caption", {{"image", data_uri(png_bytes(7))}}, 200);
  auto r = server_->client().Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  for (const char* m : {"blip2_requests_total{route=\"/v1/caption\",status=\"200\"}", "blip2_request_duration_seconds_bucket",
                        "blip2_queue_depth 0", "blip2_batch_size_count", "blip2_generated_tokens_total",
                        "blip2_tokens_per_second", "# TYPE blip2_batch_size histogram"})
    EXPECT_HAS(r->body, m);
}

TEST_F(ServerTest, BadRequestsGetA4xxThatNamesTheProblem) {
  const std::string img = data_uri(png_bytes(8));
  auto c = server_->client();
  auto r = c.Post("/v1/caption", "{\"image\": ", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_HAS(r->body, "not valid JSON");
  r = c.Post("/v1/caption", "image=abc", "text/plain");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 415);
  EXPECT_HAS(r->body, "Content-Type");
  EXPECT_HAS(error_of("/v1/caption", json::array(), 400), "JSON object");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"beams", 3}}, 400), "unknown field 'beams'");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"max_tokens", "ten"}}, 400), "'max_tokens' must be an integer");
  EXPECT_HAS(error_of("/v1/caption", {{"image", 7}}, 400), "'image' must be a string");
  EXPECT_HAS(error_of("/v1/caption", json::object(), 400), "'image' is required");
  EXPECT_HAS(error_of("/v1/caption", {{"image", "https://example.com/cat.png"}}, 400), "fetches nothing");
  EXPECT_HAS(error_of("/v1/caption", {{"image", "data:image/png;base64,%%%"}}, 400), "not valid base64");
  EXPECT_HAS(error_of("/v1/caption", {{"image", test::base64("\x89PNG\r\n\x1a\n garbage")}}, 400), "PNG");
  const auto huge = test_images::png_header_only(5000, 5000);  // 25 M pixels, over the server's 4096 x 4096
  EXPECT_HAS(error_of("/v1/caption", {{"image", test::base64(std::string(huge.begin(), huge.end()))}}, 400),
             "over the limit");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"num_beams", 0}}, 400), "num_beams");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"temperature", -1}}, 400), "temperature");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"prompt", std::string(5000, 'a')}}, 400), "at most");
  EXPECT_HAS(error_of("/v1/caption", {{"image", img}, {"max_tokens", 100000}}, 400), "context");
  EXPECT_HAS(error_of("/v1/answer", {{"image", img}}, 400), "'question' is required");
  EXPECT_HAS(error_of("/v1/match", {{"image", img}, {"texts", "one"}}, 400), "array of strings");
  EXPECT_HAS(error_of("/v1/embeddings", {{"image", img}, {"text", "both"}}, 400), "exactly one");
  const json user_text = {{{"role", "user"}, {"content", "hello"}}};
  EXPECT_HAS(error_of("/v1/chat/completions", {{"messages", user_text}}, 400), "exactly one image");
  EXPECT_HAS(error_of("/v1/chat/completions", {{"messages", user_text}, {"logprobs", true}}, 400), "unknown field");
  const json remote = {{{"role", "user"},
                        {"content", {{{"type", "image_url"}, {"image_url", {{"url", "http://x/y.png"}}}}}}}};
  EXPECT_HAS(error_of("/v1/chat/completions", {{"messages", remote}}, 400), "remote URL");
  r = c.Get("/v1/nothing");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  EXPECT_HAS(r->body, "invalid_request_error");
  // Still serving after all that.
  EXPECT_FALSE(post("/v1/caption", {{"image", img}}, 200)["text"].get<std::string>().empty());
}

TEST_F(ServerTest, OversizeBodyIs413) {
  ServerProcess small({"-m", test::bundled_model("opt"), "--max-body-mb", "0.01", "--threads", "1"});
  ASSERT_TRUE(small.ready()) << small.stderr_text();
  auto r = small.client().Post("/v1/caption", json{{"image", std::string(20000, 'A')}}.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_HAS(r->body, "--max-body-mb");
  EXPECT_EQ(small.stop(SIGTERM), 0);
}

TEST_F(ServerTest, ApiKeyIsRequiredExceptForHealth) {
  ServerProcess keyed({"-m", test::bundled_model("opt"), "--threads", "1"}, {"BLIP2_API_KEY=s3cret"});
  ASSERT_TRUE(keyed.ready()) << keyed.stderr_text();
  auto r = keyed.client().Get("/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_HAS(r->body, "authentication_error");
  r = keyed.client("wrong").Get("/v1/models");
  EXPECT_EQ(r->status, 401);
  r = keyed.client("s3cret").Get("/v1/models");
  EXPECT_EQ(r->status, 200);
  r = keyed.client().Get("/health");
  EXPECT_EQ(r->status, 200);
  r = keyed.client().Post("/v1/caption", json{{"image", data_uri(png_bytes(9))}}.dump(), "application/json");
  EXPECT_EQ(r->status, 401);
}

TEST_F(ServerTest, ServesTheWebPage) {
  test::TempDir web;
  std::ofstream(web.file("index.html")) << "<!doctype html><title>blip2</title>";
  ServerProcess s({"-m", test::bundled_model("opt"), "--web-root", web.path(), "--threads", "1"});
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  auto r = s.client().Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_HAS(r->body, "<title>blip2</title>");
  EXPECT_HAS(r->get_header_value("Content-Type"), "text/html");
}

}  // namespace
}  // namespace blip2
