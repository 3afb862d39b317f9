// The server's request parsing (apps/server/request): base64 and data URIs,
// images, and generation options onto the library's defaults.
#include "apps/server/request.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include "image_fixtures.h"

namespace blip2 {
namespace {

using server::ApiError;
using server::Fields;

int status_of(const std::function<void()>& f, std::string* message = nullptr) {
  try {
    f();
  } catch (const ApiError& e) {
    if (message) *message = e.what();
    return e.status();
  }
  return 0;
}

TEST(ServerRequestTest, Base64DecodesStandardAndUrlSafeWithOrWithoutPadding) {
  EXPECT_EQ(server::decode_base64("aGVsbG8=", "x"), "hello");
  EXPECT_EQ(server::decode_base64("aGVsbG8", "x"), "hello");
  EXPECT_EQ(server::decode_base64("aGVs\nbG8h", "x"), "hello!");
  EXPECT_EQ(server::decode_base64("-_8=", "x"), std::string("\xfb\xff", 2));
  std::string m;
  EXPECT_EQ(status_of([] { server::decode_base64("aGV*bG8=", "field 'image'"); }, &m), 400);
  EXPECT_NE(m.find("field 'image' is not valid base64"), std::string::npos) << m;
  EXPECT_EQ(status_of([] { server::decode_base64("aGVsb", "x"); }), 400);
}

TEST(ServerRequestTest, ImagesComeFromDataUrisOrBase64AndNeverFromTheNetwork) {
  test_images::PngSpec spec;
  spec.width = spec.height = 8;
  spec.samples = test_images::gradient_rgb(8, 8);
  const auto png = test_images::encode_png(spec);
  const std::string b64 = [&] {
    static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    uint32_t acc = 0;
    int bits = 0;
    for (uint8_t c : png) {
      acc = (acc << 8) | c;
      bits += 8;
      while (bits >= 6) out += k[(acc >> (bits -= 6)) & 63];
    }
    if (bits > 0) out += k[(acc << (6 - bits)) & 63];
    return out;
  }();
  const Image a = server::decode_image_field(b64, "image");
  const Image b = server::decode_image_field("data:image/png;base64," + b64, "image");
  EXPECT_FALSE(a.empty());
  EXPECT_EQ(a.rgb, b.rgb);
  std::string m;
  EXPECT_EQ(status_of([] { server::decode_image_field("https://example.com/a.png", "image"); }, &m), 400);
  EXPECT_NE(m.find("fetches nothing"), std::string::npos) << m;
  EXPECT_EQ(status_of([] { server::decode_image_field("data:image/png,rawbytes", "image"); }, &m), 400);
  EXPECT_NE(m.find(";base64"), std::string::npos) << m;
  EXPECT_EQ(status_of([] { server::decode_image_field("AAAAAAAA", "image"); }), 400);  // not an image
}

TEST(ServerRequestTest, GenerationOptionsOverrideTheLibraryDefaults) {
  const GenerationConfig defaults = Pipeline::vqa_defaults();
  Fields none;
  const auto same = server::generation_options(none, defaults, "max_tokens");
  EXPECT_EQ(same.num_beams, defaults.num_beams);
  EXPECT_EQ(same.max_new_tokens, defaults.max_new_tokens);
  EXPECT_FALSE(same.do_sample);

  Fields f;
  f.json = {{"max_tokens", 7}, {"temperature", 0.5}, {"top_p", 0.9}, {"seed", 3}, {"n", 2}};
  const auto g = server::generation_options(f, defaults, "max_tokens");
  EXPECT_EQ(g.max_new_tokens, 7);
  EXPECT_TRUE(g.do_sample);  // a temperature means sampling, as in OpenAI's API
  EXPECT_EQ(g.num_beams, 1);
  EXPECT_DOUBLE_EQ(g.temperature, 0.5);
  EXPECT_DOUBLE_EQ(g.top_p, 0.9);
  EXPECT_EQ(g.seed, 3u);
  EXPECT_EQ(g.num_return_sequences, 2);
  EXPECT_EQ(g.top_k, defaults.top_k);

  Fields greedy;
  greedy.json = {{"temperature", 0}};
  const auto gr = server::generation_options(greedy, defaults, "max_tokens");
  EXPECT_FALSE(gr.do_sample);
  EXPECT_EQ(gr.num_beams, 1);

  std::string m;
  Fields bad;
  bad.json = {{"temperature", 0.7}, {"num_beams", 3}};  // beam sampling: the library refuses
  EXPECT_EQ(status_of([&] { server::generation_options(bad, defaults, "max_tokens"); }, &m), 400);
  EXPECT_NE(m.find("num_beams"), std::string::npos) << m;
  bad.json = {{"max_tokens", 2.5}};
  EXPECT_EQ(status_of([&] { server::generation_options(bad, defaults, "max_tokens"); }, &m), 400);
  EXPECT_NE(m.find("'max_tokens' must be an integer, got a number"), std::string::npos) << m;
  bad.json = {{"top_p", true}};
  EXPECT_EQ(status_of([&] { server::generation_options(bad, defaults, "max_tokens"); }, &m), 400);
  EXPECT_NE(m.find("'top_p' must be a number, got a boolean"), std::string::npos) << m;
}

TEST(ServerRequestTest, UnknownFieldsAreNamedWithTheAllowedOnes) {
  Fields f;
  f.json = {{"image", "x"}, {"colour", "red"}};
  std::string m;
  EXPECT_EQ(status_of([&] { f.allow_only({"image", "prompt"}, "/v1/caption"); }, &m), 400);
  EXPECT_NE(m.find("unknown field 'colour' for /v1/caption; the fields are: image, prompt"), std::string::npos) << m;
}

// Found by tests/fuzz/fuzz_server_request: a number beyond double's range is
// nlohmann's out_of_range, not a parse_error; it was a 500, it is a 400.
TEST(ServerRequestTest, BodiesThatAreNotJsonObjectsAre400WhateverTheParserSays) {
  for (const std::string body : {std::string("{\"max_tokens\": 6e641}"), std::string("{\"a\": 1e999999}"),
                                 std::string("{\"a\":"), std::string("[1, 2]"), std::string("\"x\"")}) {
    httplib::Request req;
    req.set_header("Content-Type", "application/json");
    req.body = body;
    std::string m;
    EXPECT_EQ(status_of([&] { server::read_fields(req); }, &m), 400) << body;
    EXPECT_FALSE(m.empty()) << body;
  }
  Fields form;  // multipart fields are strings read as the JSON value they spell
  form.multipart = true;
  form.json = {{"max_tokens", "1e999"}, {"temperature", "0.5"}};
  EXPECT_EQ(status_of([&] { form.integer("max_tokens", 1, 100); }), 400);
  EXPECT_EQ(form.number("temperature", 0, 2).value(), 0.5);
}

}  // namespace
}  // namespace blip2
