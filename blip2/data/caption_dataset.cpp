// LAVIS-style caption annotations: parse + validate once, decode on demand.
#include "blip2/data/caption_dataset.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

using json = nlohmann::json;

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

std::string json_type(const json& j) { return j.type_name(); }

std::string join_path(const std::string& root, const std::string& rel) {
  if (root.empty()) return rel;
  if (!rel.empty() && rel.front() == '/') return rel;  // absolute paths are used as they are
  if (root.back() == '/') return root + rel;
  return root + "/" + rel;
}

bool is_regular_file(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  return !ec && std::filesystem::is_regular_file(st);
}

}  // namespace

CaptionDataset::CaptionDataset(const std::string& annotation_path, const std::string& image_root,
                               const CaptionDatasetOptions& options)
    : source_(annotation_path), image_root_(image_root), options_(options) {
  std::ifstream in(annotation_path, std::ios::binary);
  if (!in) {
    throw InputError("[CaptionDataset] cannot open annotation file '" + annotation_path +
                     "'; expected a LAVIS-style JSON list of {\"image\", \"caption\", \"image_id\"} records, "
                     "check the path");
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InputError("[CaptionDataset] read error on '" + annotation_path + "'; check the disk");
  parse(ss.str());
}

CaptionDataset CaptionDataset::from_json_text(const std::string& json_text, const std::string& image_root,
                                              const CaptionDatasetOptions& options,
                                              const std::string& name_for_errors) {
  CaptionDataset ds;
  ds.source_ = name_for_errors;
  ds.image_root_ = image_root;
  ds.options_ = options;
  ds.parse(json_text);
  return ds;
}

void CaptionDataset::parse(const std::string& text) {
  const std::string where = "[CaptionDataset] " + source_;
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(where + ": not valid JSON at byte " + std::to_string(e.byte) + " (counting from 1; " + e.what() +
                     "); expected a JSON list of annotation records, fix the file");
  } catch (const json::exception& e) {  // out_of_range: a number beyond double (1e999)
    throw InputError(where + ": not valid JSON (" + e.what() + "); expected a JSON list of annotation records, fix the file");
  }
  if (!doc.is_array()) {
    throw InputError(where + ": the top-level value is a JSON " + json_type(doc) +
                     "; expected a list of {\"image\": path, \"caption\": text or list, \"image_id\": id} records");
  }

  std::vector<CaptionRecord> all;
  all.reserve(doc.size());
  std::vector<size_t> empty_records;  // indices in the file
  std::vector<size_t> file_index;     // file index of each record in `all`
  for (size_t i = 0; i < doc.size(); ++i) {
    const json& r = doc[i];
    const std::string rec = where + ": record " + std::to_string(i);
    if (!r.is_object()) {
      throw InputError(rec + " is a JSON " + json_type(r) + "; expected an object with \"image\" and \"caption\"");
    }
    CaptionRecord out;
    auto img = r.find("image");
    if (img == r.end() || !img->is_string() || img->get<std::string>().empty()) {
      throw InputError(rec + ": \"image\" is " +
                       (img == r.end() ? std::string("missing") : "a JSON " + json_type(*img) + (img->is_string() ? " (empty)" : "")) +
                       "; expected a non-empty string path relative to the image root");
    }
    out.image = img->get<std::string>();

    auto cap = r.find("caption");
    if (cap == r.end()) {
      throw InputError(rec + " (image '" + out.image +
                       "') has no \"caption\" field; expected a string or a list of strings");
    }
    if (cap->is_string()) {
      std::string c = trim(cap->get<std::string>());
      if (!c.empty()) out.captions.push_back(std::move(c));
    } else if (cap->is_array()) {
      for (size_t k = 0; k < cap->size(); ++k) {
        const json& c = (*cap)[k];
        if (!c.is_string()) {
          throw InputError(rec + ": \"caption\"[" + std::to_string(k) + "] is a JSON " + json_type(c) +
                           "; expected a string");
        }
        std::string t = trim(c.get<std::string>());
        if (!t.empty()) out.captions.push_back(std::move(t));
      }
    } else {
      throw InputError(rec + ": \"caption\" is a JSON " + json_type(*cap) +
                       "; expected a string or a list of strings");
    }

    auto question = r.find("question");
    if (question != r.end() && !question->is_null()) {
      if (!question->is_string())
        throw InputError(rec + ": \"question\" is a JSON " + json_type(*question) + "; expected a string");
      out.question = question->get<std::string>();
    }

    auto id = r.find("image_id");
    if (id == r.end() || id->is_null()) {
      out.image_id = out.image;
    } else if (id->is_string()) {
      out.image_id = id->get<std::string>();
    } else if (id->is_number_unsigned()) {
      out.image_id = std::to_string(id->get<uint64_t>());
    } else if (id->is_number_integer()) {
      out.image_id = std::to_string(id->get<int64_t>());
    } else {
      throw InputError(rec + ": \"image_id\" is a JSON " + json_type(*id) + "; expected a string or an integer");
    }

    if (out.captions.empty()) {
      empty_records.push_back(i);
      continue;
    }
    all.push_back(std::move(out));
    file_index.push_back(i);
  }

  if (!empty_records.empty()) {
    if (options_.missing_images == MissingImages::kFail) {
      throw InputError(where + ": record " + std::to_string(empty_records.front()) +
                       " has no non-blank caption (" + std::to_string(empty_records.size()) +
                       " such record(s) in all); expected at least one non-empty caption per record, fix "
                       "the annotations or " + options_.skip_hint + " to drop them");
    }
    skipped_empty_ = empty_records.size();
  }

  if (options_.check_images) {
    std::vector<CaptionRecord> kept;
    kept.reserve(all.size());
    size_t missing = 0;
    size_t first_missing = 0;
    std::string first_missing_path;
    for (size_t k = 0; k < all.size(); ++k) {
      const std::string path = join_path(image_root_, all[k].image);
      if (is_regular_file(path)) {
        kept.push_back(std::move(all[k]));
        continue;
      }
      if (missing++ == 0) {
        first_missing = file_index[k];
        first_missing_path = path;
      }
    }
    if (missing > 0 && options_.missing_images == MissingImages::kFail) {
      throw InputError(where + ": " + std::to_string(missing) + " of " + std::to_string(all.size()) +
                       " record(s) name an image file that does not exist, the first is record " +
                       std::to_string(first_missing) + ": '" + first_missing_path +
                       "'; expected regular files under " + options_.root_name + " '" + image_root_ + "': fix " +
                       options_.root_name + " or the paths, or " + options_.skip_hint);
    }
    skipped_missing_ = missing;
    all = std::move(kept);
  }
  records_ = std::move(all);
}

const CaptionRecord& CaptionDataset::record(size_t i) const {
  if (i >= records_.size()) {
    throw InputError("[CaptionDataset] " + source_ + ": record index " + std::to_string(i) +
                     " out of range; expected < size() = " + std::to_string(records_.size()));
  }
  return records_[i];
}

std::string CaptionDataset::image_path(size_t i) const { return join_path(image_root_, record(i).image); }

CaptionSample CaptionDataset::load(size_t i) const {
  const CaptionRecord& r = record(i);
  CaptionSample s;
  s.image = load_image(join_path(image_root_, r.image), options_.decode);
  s.captions = r.captions;
  s.image_id = r.image_id;
  s.question = r.question;
  return s;
}

}  // namespace blip2
