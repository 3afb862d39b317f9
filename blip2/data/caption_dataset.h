// Image-caption data sets in LAVIS's annotation format (COCO / Flickr / VG /
// CC / SBU "caption" builders): one JSON file holding a list of records
//
//   [{"image": "val2014/COCO_val2014_000000391895.jpg",     // relative to image_root
//     "caption": "a man riding a bike"  |  ["caption 1", "caption 2"],
//     "image_id": "coco_391895"  |  391895},                  // optional
//    ...]
//
// and a directory the "image" paths are relative to. Random access: the
// records are parsed and validated once, at open time; images are decoded on
// demand by load(i) (thread-safe, so a BatchLoader's workers can share one
// data set). See docs/data.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "blip2/data/image.h"

namespace blip2 {

// One annotation record, as read from the JSON.
struct CaptionRecord {
  std::string image;                  // path relative to the image root, as written in the JSON
  std::vector<std::string> captions;  // >= 1, each non-blank (blank list entries are dropped)
  std::string image_id;               // "image_id" (an int is written in decimal); the image path when absent
  // VQA records ({image, question, answer}): the question the captions
  // (then the answers) reply to; empty for caption data.
  std::string question;
};

// What load(i) gives: the decoded image with its record's captions / id.
struct CaptionSample {
  Image image;
  std::vector<std::string> captions;
  std::string image_id;
  std::string question;  // see CaptionRecord
};

// What to do with records whose image file does not exist (checked at open
// time with stat(), images are not decoded then) or that have no non-blank
// caption.
enum class MissingImages {
  kFail,  // InputError naming the first offender and how many there are
  kSkip,  // drop the record, count it in skipped()
};

struct CaptionDatasetOptions {
  MissingImages missing_images = MissingImages::kFail;
  // stat() every image at open time. Off: a missing image surfaces in load().
  bool check_images = true;
  DecodeOptions decode;  // passed to load_image()
  // How errors name the image root and the way to skip bad records, in the
  // caller's terms (a recipe: "data.image_root", "set data.skip_missing_images: true").
  std::string root_name = "the image root";
  std::string skip_hint = "open with MissingImages::kSkip";
};

class CaptionDataset {
 public:
  // Reads `annotation_path` (a JSON list, see above). Throws InputError for a
  // file that cannot be read, is not valid JSON (naming the byte offset), is
  // not a list, or holds a record with a missing / mistyped field (naming the
  // record index); missing images and caption-less records per the policy.
  CaptionDataset(const std::string& annotation_path, const std::string& image_root,
                 const CaptionDatasetOptions& options = {});

  // The same from JSON text held in memory; `name_for_errors` stands in for
  // the file name in messages.
  static CaptionDataset from_json_text(const std::string& json_text, const std::string& image_root,
                                       const CaptionDatasetOptions& options = {},
                                       const std::string& name_for_errors = "<json>");

  size_t size() const { return records_.size(); }
  const CaptionRecord& record(size_t i) const;  // InputError when i >= size()
  std::string image_path(size_t i) const;       // image_root / record(i).image
  // Decodes record i's image (InputError naming the path if it cannot).
  // Thread-safe.
  CaptionSample load(size_t i) const;

  // Records dropped under MissingImages::kSkip: in total, for a missing image
  // file, for having no non-blank caption.
  size_t skipped() const { return skipped_missing_ + skipped_empty_; }
  size_t skipped_missing() const { return skipped_missing_; }
  size_t skipped_empty() const { return skipped_empty_; }

  const std::string& annotation_path() const { return source_; }
  const std::string& image_root() const { return image_root_; }

 private:
  CaptionDataset() = default;
  void parse(const std::string& json_text);

  std::string source_;
  std::string image_root_;
  CaptionDatasetOptions options_;
  std::vector<CaptionRecord> records_;
  size_t skipped_missing_ = 0, skipped_empty_ = 0;
};

}  // namespace blip2
