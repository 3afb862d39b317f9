// Training data from a recipe: errors speak in the recipe's keys.
#include "blip2/train/data_source.h"

#include <fstream>

#include "blip2/data/image_processor.h"
#include "blip2/train/train_config.h"
#include "blip2/train/trainer.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

TEST(DataSourceTest, AMissingImageNamesTheRecipeKeysNotALibraryEnum) {
  test::TempDir dir;
  std::ofstream(dir.file("captions.json")) << R"([{"image": "nowhere.png", "caption": "a red square"}])";
  TrainConfig c;
  c.annotations = dir.file("captions.json");  // data.image_root left out
  ImageProcessorConfig p;
  try {
    make_batch_source(c, p, 0, 1);
    ADD_FAILURE() << "expected an InputError";
  } catch (const InputError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("data.image_root"), std::string::npos) << m;
    EXPECT_NE(m.find("data.skip_missing_images: true"), std::string::npos) << m;
    EXPECT_EQ(m.find("MissingImages"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace blip2
