#include "blip2/train/data_source.h"

#include "blip2/data/batch_loader.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace {

class LoaderSource : public BatchSource {
 public:
  explicit LoaderSource(std::unique_ptr<BatchLoader> loader) : loader_(std::move(loader)) {}
  TrainBatch next() override {
    Batch b;
    // The loader reports each epoch's end once; the trainer counts steps, not epochs.
    for (int tries = 0; !loader_->next(&b); ++tries)
      if (tries > 0) throw InputError("the training data yields no batch (fewer samples than one batch per process?)");
    TrainBatch t;
    t.pixel_values = b.pixel_values;
    t.captions = std::move(b.captions);
    t.image_ids = std::move(b.image_ids);
    return t;
  }
  nlohmann::json state() const override {
    auto s = loader_->state();
    return {{"epoch", s.epoch}, {"position", s.position}};
  }
  void restore(const nlohmann::json& j) override {
    LoaderState s;
    s.epoch = j.at("epoch").get<int64_t>();
    s.position = j.at("position").get<int64_t>();
    loader_->set_state(s);
  }

 private:
  std::unique_ptr<BatchLoader> loader_;
};

}  // namespace

std::unique_ptr<BatchSource> make_batch_source(const TrainConfig& c, const ImageProcessorConfig& processor, int rank,
                                               int world_size) {
  BatchLoaderOptions o;
  o.batch_size = c.batch_size;
  o.num_workers = c.workers;
  o.prefetch_depth = std::max(2, 2 * c.workers);
  o.seed = c.seed;
  o.rank = rank;
  o.world_size = world_size;
  o.drop_last = true;
  o.augment = c.augment;
  o.processor = processor;
  if (!c.annotations.empty()) {
    CaptionDatasetOptions d;
    d.missing_images = c.skip_missing_images ? MissingImages::kSkip : MissingImages::kFail;
    auto ds = std::make_shared<CaptionDataset>(c.annotations, c.image_root, d);
    if (ds->size() == 0) throw InputError("annotation file '" + c.annotations + "' yields no usable sample");
    return std::make_unique<LoaderSource>(std::make_unique<BatchLoader>(ds, o));
  }
  if (!c.shards.empty()) {
    WebDatasetOptions w;
    auto reader = std::make_unique<WebDatasetReader>(expand_shard_specs(c.shards), rank, world_size, c.seed, w);
    return std::make_unique<LoaderSource>(std::make_unique<BatchLoader>(std::move(reader), o));
  }
  throw ConfigError("training needs data.annotations (+ data.image_root) or data.shards");
}

}  // namespace blip2
