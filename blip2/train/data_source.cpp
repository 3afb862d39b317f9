#include "blip2/train/data_source.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "blip2/data/batch_loader.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace {

class LoaderSource : public BatchSource {
 public:
  LoaderSource(std::unique_ptr<BatchLoader> loader, std::optional<DatasetImages> images)
      : loader_(std::move(loader)), images_(std::move(images)) {}
  TrainBatch next() override {
    Batch b;
    // The loader reports each epoch's end once; the trainer counts steps, not epochs.
    for (int tries = 0; !loader_->next(&b); ++tries)
      if (tries > 0) throw InputError("the training data yields no batch (fewer samples than one batch per process?)");
    TrainBatch t;
    t.pixel_values = b.pixel_values;
    t.captions = std::move(b.captions);
    t.image_ids = std::move(b.image_ids);
    t.questions = std::move(b.questions);
    if (images_) t.indices = std::move(b.indices);  // a stream's positions are no record indices
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
  std::optional<DatasetImages> images() const override { return images_; }

 private:
  std::unique_ptr<BatchLoader> loader_;
  std::optional<DatasetImages> images_;
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
  o.caption_choice = c.caption_choice;
  o.processor = processor;
  if (!c.annotations.empty()) {
    CaptionDatasetOptions d;
    d.missing_images = c.skip_missing_images ? MissingImages::kSkip : MissingImages::kFail;
    d.root_name = "data.image_root";
    d.skip_hint = "set data.skip_missing_images: true in the recipe";
    std::shared_ptr<CaptionDataset> ds;
    if (c.mode == TrainMode::kVqa) {
      // [{image, question, answer: str | [str]}] -> records whose captions are
      // the answers: the loader's uniform caption choice then samples an
      // answer per epoch, and the question travels with it.
      std::ifstream in(c.annotations);
      if (!in) throw InputError("VQA annotation file '" + c.annotations + "' cannot be read");
      nlohmann::json j;
      try {
        in >> j;
      } catch (const std::exception& e) {
        throw InputError("VQA annotation file '" + c.annotations + "' is not valid JSON: " + e.what());
      }
      if (!j.is_array()) throw InputError("VQA annotation file '" + c.annotations + "' must hold a JSON list");
      nlohmann::json records = nlohmann::json::array();
      for (size_t i = 0; i < j.size(); ++i) {
        const auto& r = j[i];
        if (!r.is_object() || !r.contains("image") || !r.contains("question") || !r.contains("answer") ||
            !r["question"].is_string())
          throw InputError("VQA annotation file '" + c.annotations + "': record " + std::to_string(i) +
                           " needs \"image\", \"question\" (string) and \"answer\" (string or list)");
        std::vector<std::string> answers;
        if (r["answer"].is_string()) answers.push_back(r["answer"].get<std::string>());
        else if (r["answer"].is_array())
          for (const auto& a : r["answer"])
            if (a.is_string()) answers.push_back(a.get<std::string>());
        if (answers.empty())
          throw InputError("VQA annotation file '" + c.annotations + "': record " + std::to_string(i) + " has no answer");
        records.push_back({{"image", r["image"]}, {"caption", answers}, {"question", r["question"]},
                           {"image_id", r.contains("question_id") ? r["question_id"] : nlohmann::json(i)}});
      }
      ds = std::make_shared<CaptionDataset>(CaptionDataset::from_json_text(records.dump(), c.image_root, d, c.annotations));
    } else {
      ds = std::make_shared<CaptionDataset>(c.annotations, c.image_root, d);
    }
    if (ds->size() == 0) throw InputError("annotation file '" + c.annotations + "' yields no usable sample");
    DatasetImages images{{}, processor};
    for (size_t i = 0; i < ds->size(); ++i) images.record_paths.push_back(ds->image_path(i));
    return std::make_unique<LoaderSource>(std::make_unique<BatchLoader>(ds, o), std::move(images));
  }
  if (!c.shards.empty()) {
    WebDatasetOptions w;
    auto reader = std::make_unique<WebDatasetReader>(expand_shard_specs(c.shards), rank, world_size, c.seed, w);
    return std::make_unique<LoaderSource>(std::make_unique<BatchLoader>(std::move(reader), o), std::nullopt);
  }
  throw ConfigError("training needs data.annotations (+ data.image_root) or data.shards");
}

}  // namespace blip2
