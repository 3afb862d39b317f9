// blip2 quantize end to end on the bundled shapes OPT model: the written
// directory is smaller, runs (mapped, without --dtype) exactly like
// quantising on load, and bad arguments are one-line errors.
#include <filesystem>

#include "blip2/io/safetensors.h"
#include "e2e_util.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::q;
using test::run_cli;

std::string shapes_opt() { return std::string(BLIP2_SOURCE_DIR) + "/models/shapes/opt"; }

TEST(QuantizeCliTest, QuantizedDirectoryCaptionsLikeInt8OnLoad) {
  test::TempDir dir;
  const std::string out = dir.file("opt-int8");
  auto r = run_cli("quantize " + q(shapes_opt()) + " " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("matrices in int8"), std::string::npos) << r.out;
  // Every int8 matrix takes a byte per weight (+ a float32 scale per row)
  // where the float32 file took four: the file shrinks by that much. (How much
  // of a model is int8 depends on it: the shapes models' Q-Former, kept in
  // float32, is a large share of their bytes.)
  int64_t int8_weights = 0, scales = 0;
  for (const auto& [name, t] : io::load_safetensors(out + "/model.safetensors")) {
    if (t.scalar_type() == torch::kChar) int8_weights += t.numel();
    if (name.size() > 13 && name.compare(name.size() - 13, 13, ".weight_scale") == 0) scales += t.numel();
  }
  const auto in_size = static_cast<int64_t>(std::filesystem::file_size(shapes_opt() + "/model.safetensors"));
  const auto out_size = static_cast<int64_t>(std::filesystem::file_size(out + "/model.safetensors"));
  EXPECT_GT(4 * int8_weights, in_size / 3) << "most of the weight bytes are int8 matrices";
  EXPECT_LE(out_size, in_size - 3 * int8_weights + 4 * scales + 16384) << "header growth allowed: 16 KiB";
  EXPECT_TRUE(std::filesystem::exists(out + "/vocab.json"));
  const std::string image = q(test::golden("image_processor/inputs/gradient_64x48.png"));
  auto a = run_cli("caption -v --model " + q(out) + " " + image);
  auto b = run_cli("caption --dtype int8 --model " + q(shapes_opt()) + " " + image);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.err.find("weights int8 ("), std::string::npos) << a.err;
}

TEST(QuantizeCliTest, BadArgumentsAreOneLineErrors) {
  test::TempDir dir;
  auto d = run_cli("quantize " + q(shapes_opt()) + " " + q(dir.file("o")) + " --dtype int4");
  EXPECT_EQ(d.code, 1);
  EXPECT_NE(d.err.find("--dtype 'int4' is not supported; the quantised dtype is int8"), std::string::npos) << d.err;
  auto m = run_cli("quantize " + q(dir.file("missing")) + " " + q(dir.file("o")));
  EXPECT_EQ(m.code, 1);
  EXPECT_NE(m.err.find("is not a directory"), std::string::npos) << m.err;
}

}  // namespace
}  // namespace blip2
