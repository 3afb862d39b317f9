#include "blip2/eval/annotations.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "blip2/util/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace blip2::annotations {

namespace {

const char* kGenerateHint =
    "generate a split with `blip2 shapes generate --out DIR --split test --count N`, or give --data a directory "
    "that holds one";

}  // namespace

// data_dir/<name> parsed as a JSON list of objects.
json read_json_list(const std::string& data_dir, const std::string& name, const std::string& layout) {
  if (!fs::is_directory(data_dir))
    throw InputError("data directory '" + data_dir + "' does not exist; " + kGenerateHint);
  const fs::path path = fs::path(data_dir) / name;
  if (!fs::is_regular_file(path))
    throw InputError("'" + path.string() + "' not found: the data directory needs " + name + " (" + layout + "); " +
                     kGenerateHint);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    throw InputError("'" + path.string() + "' is not valid JSON (" + e.what() + "); regenerate it");
  }
  if (!j.is_array())
    throw InputError("'" + path.string() + "' must be a JSON list (" + layout + "), found a " + j.type_name());
  if (j.empty())
    throw InputError("'" + path.string() + "' is an empty data set (no entries); " + kGenerateHint +
                     " with --count >= 1");
  for (size_t i = 0; i < j.size(); ++i)
    if (!j[i].is_object())
      throw InputError("'" + path.string() + "' entry " + std::to_string(i) + " is a " + j[i].type_name() +
                       ", expected an object (" + layout + ")");
  return j;
}

std::string entry_where(const std::string& file, size_t i) { return "'" + file + "' entry " + std::to_string(i); }

std::string get_string(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  if (it == e.end() || !it->is_string())
    throw InputError(where + " has no string \"" + key + "\"" + (it == e.end() ? "" : " (found a " +
                                                                  std::string(it->type_name()) + ")"));
  return it->get<std::string>();
}

// A string or a non-empty list of strings.
std::vector<std::string> get_strings(const json& e, const char* key, const std::string& where) {
  auto it = e.find(key);
  std::vector<std::string> out;
  if (it != e.end() && it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it != e.end() && it->is_array()) {
    for (const auto& s : *it) {
      if (!s.is_string())
        throw InputError(where + ": \"" + key + "\" must hold strings, found a " + std::string(s.type_name()));
      out.push_back(s.get<std::string>());
    }
  }
  if (out.empty())
    throw InputError(where + " needs \"" + key + "\": a string or a non-empty list of strings");
  return out;
}

// An image path of an entry, resolved against data_dir and checked to exist.
std::string resolve_image(const std::string& data_dir, const std::string& rel, const std::string& where) {
  fs::path p(rel);
  if (p.is_relative()) p = fs::path(data_dir) / p;
  if (!fs::is_regular_file(p))
    throw InputError("image '" + p.string() + "' (" + where +
                     ") does not exist; image paths are relative to the data directory: regenerate the split or "
                     "fix the path");
  return p.string();
}

int64_t take(size_t n, int64_t limit) {
  if (limit < 0) throw ConfigError("--limit must be >= 0 (0 = all), got " + std::to_string(limit));
  return limit == 0 ? static_cast<int64_t>(n) : std::min<int64_t>(limit, static_cast<int64_t>(n));
}

VqaSet read_vqa_set(const std::string& data_dir, int64_t limit) {
  const std::string file = (fs::path(data_dir) / "questions.json").string();
  const json list =
      read_json_list(data_dir, "questions.json", "a list of {image, question, answer: [..], question_id}");
  const int64_t n = take(list.size(), limit);
  VqaSet s;
  bool has_types = true;
  for (int64_t i = 0; i < n; ++i) has_types = has_types && list[static_cast<size_t>(i)].contains("question_type");
  for (int64_t i = 0; i < n; ++i) {
    const auto where = entry_where(file, static_cast<size_t>(i));
    const json& e = list[static_cast<size_t>(i)];
    s.rel.push_back(get_string(e, "image", where));
    s.questions.push_back(get_string(e, "question", where));
    s.answers.push_back(get_strings(e, "answer", where));
    if (has_types) s.types.push_back(get_string(e, "question_type", where));
    s.paths.push_back(resolve_image(data_dir, s.rel.back(), where));
  }
  return s;
}


}  // namespace blip2::annotations
