// The annotation files of an evaluation data directory (captions.json,
// questions.json: lists of objects, COCO / LAVIS style) and the checked field
// reads every evaluation shares: each error names the file, the entry and the
// field, and says how to fix it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace blip2::annotations {

// data_dir/<name> parsed as a non-empty JSON list of objects; `layout`
// describes an entry for the error messages. InputError otherwise.
nlohmann::json read_json_list(const std::string& data_dir, const std::string& name, const std::string& layout);

// "'<file>' entry <i>": where an entry is, for error messages.
std::string entry_where(const std::string& file, size_t i);

// The string field `key` of entry `e`; InputError naming `where`.
std::string get_string(const nlohmann::json& e, const char* key, const std::string& where);
// A string or a non-empty list of strings.
std::vector<std::string> get_strings(const nlohmann::json& e, const char* key, const std::string& where);

// An image path of an entry, resolved against data_dir and checked to exist.
std::string resolve_image(const std::string& data_dir, const std::string& rel, const std::string& where);

// How many of n entries an evaluation with --limit takes (0 = all);
// ConfigError for a negative limit.
int64_t take(size_t n, int64_t limit);

// questions.json: one row per question.
struct VqaSet {
  std::vector<std::string> rel, paths, questions, types;  // types empty unless every entry has one
  std::vector<std::vector<std::string>> answers;
};

// The first `limit` questions of data_dir/questions.json (0 = all).
VqaSet read_vqa_set(const std::string& data_dir, int64_t limit);

}  // namespace blip2::annotations
