// blip2 serve under concurrency: batching gives the same outputs as one
// request at a time, streamed deltas concatenate to the whole text, a full
// queue answers 429, a slow request 504, a client that hangs up leaves the
// others alone, SIGTERM finishes what is in flight and exits 0.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <thread>

#include "server_process.h"

namespace blip2 {
namespace {

using nlohmann::json;
using test::data_uri;
using test::png_bytes;
using test::ServerProcess;

std::vector<std::string> args(std::vector<std::string> extra) {
  std::vector<std::string> a = {"-m", test::bundled_model("opt"), "--threads", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

httplib::Result post(const ServerProcess& s, const std::string& path, const json& body) {
  return s.client().Post(path.c_str(), body.dump(), "application/json");
}

json metric_body(const ServerProcess& s) {
  auto r = s.client().Get("/metrics");
  return r ? json(r->body) : json("");
}

double metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// The chat.completion.chunk events of a streamed response, and whether it ended with [DONE].
struct Stream {
  std::vector<json> chunks;
  bool done = false;
  int status = 0;
  std::map<int, std::string> text;  // concatenated deltas per choice
  int content_events = 0;
};

Stream stream_chat(const ServerProcess& s, const json& body, int hang_up_after = -1) {
  Stream out;
  std::string buf;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buf.append(data, n);
    size_t end;
    while ((end = buf.find("\n\n")) != std::string::npos) {
      const std::string event = buf.substr(0, end);
      buf.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string data_text = event.substr(6);
      if (data_text == "[DONE]") {
        out.done = true;
        continue;
      }
      json c = json::parse(data_text);
      out.chunks.push_back(c);
      for (const auto& ch : c.value("choices", json::array()))
        if (ch["delta"].contains("content") && !ch["delta"]["content"].get<std::string>().empty()) {
          out.text[ch["index"].get<int>()] += ch["delta"]["content"].get<std::string>();
          ++out.content_events;
        }
      if (hang_up_after >= 0 && static_cast<int>(out.chunks.size()) > hang_up_after) return false;
    }
    return true;
  };
  auto c = s.client();
  auto r = c.send(req);
  out.status = r ? r->status : 0;
  return out;
}

json chat_body(const std::string& png, const std::string& question, json options = json::object()) {
  json content = json::array();
  if (!question.empty()) content.push_back({{"type", "text"}, {"text", question}});
  content.push_back({{"type", "image_url"}, {"image_url", {{"url", data_uri(png)}}}});
  options["messages"] = json::array({{{"role", "user"}, {"content", content}}});
  return options;
}

TEST(ServerLoadTest, BatchedRequestsGiveTheSameOutputsAsSingleOnes) {
  ServerProcess single(args({"--max-batch", "1"}));
  ServerProcess batched(args({"--max-batch", "8", "--max-wait-ms", "300"}));
  ASSERT_TRUE(single.ready() && batched.ready()) << single.stderr_text() << batched.stderr_text();
  const std::vector<std::string> questions = {"what shape is it?", "what color is the shape?", "is it big?",
                                              "where is it?", "what is in the picture?", "how many shapes?"};
  std::vector<json> bodies;
  for (int i = 0; i < 6; ++i) {
    bodies.push_back({{"image", data_uri(png_bytes(20 + i))}, {"question", questions[static_cast<size_t>(i)]}});
    bodies.push_back({{"image", data_uri(png_bytes(20 + i))}});  // captions batch among themselves
  }
  std::vector<json> expected;
  for (const auto& b : bodies) {
    auto r = post(single, b.contains("question") ? "/v1/answer" : "/v1/caption", b);
    ASSERT_TRUE(r && r->status == 200);
    expected.push_back(json::parse(r->body));
  }
  std::vector<std::future<httplib::Result>> futures;
  for (const auto& b : bodies)
    futures.push_back(std::async(std::launch::async, [&batched, b] {
      return post(batched, b.contains("question") ? "/v1/answer" : "/v1/caption", b);
    }));
  for (size_t i = 0; i < futures.size(); ++i) {
    auto r = futures[i].get();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    json j = json::parse(r->body);
    EXPECT_EQ(j["text"], expected[i]["text"]) << i;
    EXPECT_EQ(j["tokens"], expected[i]["tokens"]) << i;
  }
  // Some requests really shared a batch.
  const std::string m = metric_body(batched);
  EXPECT_GT(metric(m, "blip2_batch_size_sum"), metric(m, "blip2_batch_size_count")) << m;
  EXPECT_LT(metric(m, "blip2_batch_size_count"), static_cast<double>(bodies.size())) << m;
}

TEST(ServerLoadTest, ARequestThatFailsInABatchFailsAloneAndTheOthersGetTheirAnswers) {
  ServerProcess s(args({"--max-batch", "4", "--max-wait-ms", "300"}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) long_prompt += "a red circle ";  // longer than the LM's context allows
  std::vector<json> bodies;
  for (int i = 0; i < 4; ++i) bodies.push_back({{"image", data_uri(png_bytes(90 + i))}, {"prompt", "a picture of"}});
  bodies[2]["prompt"] = long_prompt;
  std::vector<std::future<httplib::Result>> futures;
  for (const auto& b : bodies)
    futures.push_back(std::async(std::launch::async, [&s, b] { return post(s, "/v1/caption", b); }));
  for (size_t i = 0; i < futures.size(); ++i) {
    auto r = futures[i].get();
    ASSERT_TRUE(r);
    if (i == 2) {
      EXPECT_EQ(r->status, 400) << r->body;
      EXPECT_NE(r->body.find("context"), std::string::npos) << r->body;
    } else {
      EXPECT_EQ(r->status, 200) << r->body;
    }
  }
  // They were one batch, which failed and was re-run request by request: three batches of one succeeded.
  const std::string m = metric_body(s);
  EXPECT_EQ(metric(m, "blip2_batch_size_count"), 3) << m;
  EXPECT_EQ(metric(m, "blip2_batch_size_sum"), 3) << m;
}

TEST(ServerLoadTest, StreamedDeltasConcatenateToTheWholeText) {
  ServerProcess s(args({}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  const std::string png = png_bytes(31);
  for (const json& options : {json{{"temperature", 0}}, json::object(), json{{"num_beams", 3}, {"n", 2}},
                              json{{"temperature", 0.8}, {"seed", 5}, {"n", 2}}}) {
    SCOPED_TRACE(options.dump());
    for (const std::string question : {"", "what shape is it?"}) {
      auto whole = post(s, "/v1/chat/completions", chat_body(png, question, options));
      ASSERT_TRUE(whole && whole->status == 200);
      json w = json::parse(whole->body);
      json streamed_body = chat_body(png, question, options);
      streamed_body["stream"] = true;
      streamed_body["stream_options"] = {{"include_usage", true}};
      Stream st = stream_chat(s, streamed_body);
      EXPECT_EQ(st.status, 200);
      EXPECT_TRUE(st.done);
      ASSERT_GE(st.chunks.size(), 3u);
      EXPECT_EQ(st.chunks.front()["object"], "chat.completion.chunk");
      EXPECT_EQ(st.chunks.front()["choices"][0]["delta"]["role"], "assistant");
      for (size_t i = 0; i < w["choices"].size(); ++i)
        EXPECT_EQ(st.text[static_cast<int>(i)], w["choices"][i]["message"]["content"]) << i;
      EXPECT_EQ(st.chunks.back()["usage"], w["usage"]);
      // Greedy decoding streams token by token.
      if (options.value("temperature", 1.0) == 0 && w["usage"]["completion_tokens"].get<int>() > 2 * options.value("n", 1))
        EXPECT_GT(st.content_events, options.value("n", 1));
    }
  }
}

TEST(ServerLoadTest, AClientThatHangsUpMidStreamLeavesTheOthersServed) {
  ServerProcess s(args({"--max-batch", "4", "--max-wait-ms", "100"}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  json body = chat_body(png_bytes(40), "what is it?", {{"temperature", 0}, {"stream", true}});
  auto quitter = std::async(std::launch::async, [&] { return stream_chat(s, body, /*hang_up_after=*/1); });
  auto stayer = std::async(std::launch::async, [&] { return stream_chat(s, body); });
  Stream q = quitter.get(), st = stayer.get();
  EXPECT_FALSE(q.done);
  EXPECT_TRUE(st.done);
  EXPECT_FALSE(st.text[0].empty());
  auto r = s.client().Get("/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["queue_depth"], 0);
}

// A request heavy enough to keep the model busy for a while.
json slow_caption(int seed) { return {{"image", data_uri(png_bytes(seed))}, {"num_beams", 24}, {"max_tokens", 20}}; }

TEST(ServerLoadTest, AFullQueueAnswers429AndTheRestSucceed) {
  ServerProcess s(args({"--max-batch", "1", "--max-queue", "1"}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  std::vector<std::future<httplib::Result>> futures;
  for (int i = 0; i < 8; ++i)
    futures.push_back(std::async(std::launch::async, [&s, i] { return post(s, "/v1/caption", slow_caption(50 + i)); }));
  int ok = 0, full = 0;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r);
    if (r->status == 200) ++ok;
    if (r->status == 429) {
      ++full;
      EXPECT_NE(r->body.find("rate_limit_error"), std::string::npos) << r->body;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_GE(full, 1);
  EXPECT_EQ(ok + full, 8);
}

TEST(ServerLoadTest, ARequestPastTheTimeoutIs504) {
  ServerProcess s(args({"--timeout-s", "0.001"}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  auto r = post(s, "/v1/caption", slow_caption(60));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_NE(r->body.find("timeout_error"), std::string::npos) << r->body;
}

TEST(ServerLoadTest, SigtermFinishesRequestsInFlightAndExitsZero) {
  ServerProcess s(args({"--max-batch", "1"}));
  ASSERT_TRUE(s.ready()) << s.stderr_text();
  std::vector<std::future<httplib::Result>> futures;
  for (int i = 0; i < 3; ++i)
    futures.push_back(std::async(std::launch::async, [&s, i] { return post(s, "/v1/caption", slow_caption(70 + i)); }));
  // Wait until the server holds them all (one running, two queued).
  for (int i = 0; i < 400; ++i) {
    auto h = s.client().Get("/health");
    if (h && json::parse(h->body)["queue_depth"].get<int>() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(s.stop(SIGTERM), 0) << s.stderr_text();
  int ok = 0;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r) << "a request in flight lost its connection";
    EXPECT_TRUE(r->status == 200 || r->status == 503) << r->status;
    ok += r->status == 200;
  }
  EXPECT_GE(ok, 2);
}

}  // namespace
}  // namespace blip2
