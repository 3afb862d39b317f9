// WebDataset tar shards through libarchive (see webdataset.h).
#include "blip2/data/webdataset.h"

#include <archive.h>
#include <archive_entry.h>
#include <glob.h>

#include <algorithm>
#include <deque>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <utility>

#include "blip2/data/augment.h"
#include "blip2/util/error.h"

namespace blip2 {

namespace {

using json = nlohmann::json;

const char* const kImageExts[] = {"jpg", "jpeg", "png", "webp"};

std::string trim(const std::string& s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

// WebDataset's base_plus_ext: key = path up to the first '.' of the file
// name, ext = the rest (lower-cased). False for members to ignore.
bool split_member_name(std::string path, std::string* key, std::string* ext) {
  while (path.size() >= 2 && path.compare(0, 2, "./") == 0) path.erase(0, 2);
  const size_t slash = path.rfind('/');
  const size_t base = slash == std::string::npos ? 0 : slash + 1;
  const size_t dot = path.find('.', base);
  if (dot == std::string::npos || dot == base) return false;   // no '.', or a hidden file
  if (path.compare(base, 2, "__") == 0) return false;           // "__meta__"-style members
  if (dot + 1 >= path.size()) return false;                     // "name." has no extension
  *key = path.substr(0, dot);
  *ext = lower(path.substr(dot + 1));
  return true;
}

bool is_kept_ext(const std::string& ext) {
  for (const char* e : kImageExts) {
    if (ext == e) return true;
  }
  return ext == "txt" || ext == "json";
}

// ---------------------------------------------------------------------------
// Shard spec expansion
// ---------------------------------------------------------------------------

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

void expand_braces(const std::string& spec, const std::string& original, std::vector<std::string>* out) {
  // The first '{' with its matching '}'.
  size_t open = std::string::npos, close = std::string::npos;
  int depth = 0;
  for (size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == '{') {
      if (depth++ == 0) open = i;
    } else if (spec[i] == '}' && depth > 0) {
      if (--depth == 0) {
        close = i;
        break;
      }
    }
  }
  if (open == std::string::npos) {
    out->push_back(spec);
    return;
  }
  if (close == std::string::npos) {
    throw ConfigError("shard spec '" + original + "': unmatched '{'; expected e.g. \"data/shard-{000000..000009}.tar\"");
  }
  const std::string head = spec.substr(0, open), body = spec.substr(open + 1, close - open - 1),
                    tail = spec.substr(close + 1);
  std::vector<std::string> alternatives;
  const size_t dots = body.find("..");
  if (dots != std::string::npos && all_digits(body.substr(0, dots)) && all_digits(body.substr(dots + 2))) {
    const std::string a = body.substr(0, dots), b = body.substr(dots + 2);
    if (a.size() > 18 || b.size() > 18) {
      throw ConfigError("shard spec '" + original + "': range {" + body + "} has too many digits");
    }
    const bool pad = (a.size() > 1 && a[0] == '0') || (b.size() > 1 && b[0] == '0');
    const size_t width = pad ? std::max(a.size(), b.size()) : 0;
    const int64_t lo = std::stoll(a), hi = std::stoll(b);
    const int64_t step = lo <= hi ? 1 : -1;
    const int64_t count = (hi - lo) * step + 1;
    if (count > 10000000) {
      throw ConfigError("shard spec '" + original + "': range {" + body + "} expands to " + std::to_string(count) +
                        " names; expected at most 10^7");
    }
    for (int64_t v = lo;; v += step) {
      std::string s = std::to_string(v);
      if (s.size() < width) s.insert(0, width - s.size(), '0');
      alternatives.push_back(s);
      if (v == hi) break;
    }
  } else {
    // Top-level commas separate alternatives; no comma -> literal braces.
    int d = 0;
    size_t start = 0;
    bool any_comma = false;
    for (size_t i = 0; i <= body.size(); ++i) {
      if (i == body.size() || (body[i] == ',' && d == 0)) {
        alternatives.push_back(body.substr(start, i - start));
        start = i + 1;
        if (i < body.size()) any_comma = true;
      } else if (body[i] == '{') {
        ++d;
      } else if (body[i] == '}') {
        --d;
      }
    }
    if (!any_comma) {
      // "{x}" stays literal; keep expanding what follows.
      std::vector<std::string> rest;
      expand_braces(tail, original, &rest);
      std::vector<std::string> inner;
      expand_braces(body, original, &inner);
      for (const std::string& in : inner) {
        for (const std::string& r : rest) out->push_back(head + "{" + in + "}" + r);
      }
      return;
    }
  }
  for (const std::string& alt : alternatives) expand_braces(head + alt + tail, original, out);
}

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

}  // namespace

std::vector<std::string> expand_shard_spec(const std::string& spec) {
  if (spec.empty()) throw ConfigError("shard spec is empty; expected a tar path or pattern like \"shard-{000..009}.tar\"");
  std::vector<std::string> braces;
  expand_braces(spec, spec, &braces);
  std::vector<std::string> out;
  for (const std::string& p : braces) {
    if (!has_glob_chars(p)) {
      out.push_back(p);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(p.c_str(), 0, nullptr, &g);
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
      globfree(&g);
      throw ConfigError("shard spec '" + spec + "': pattern '" + p +
                        "' matches no file; expected at least one tar shard, check the path");
    }
    if (rc != 0) {
      globfree(&g);
      throw ConfigError("shard spec '" + spec + "': glob of '" + p + "' failed (error " + std::to_string(rc) +
                        "); check the directory permissions");
    }
    std::vector<std::string> matched(g.gl_pathv, g.gl_pathv + g.gl_pathc);
    globfree(&g);
    std::sort(matched.begin(), matched.end());
    out.insert(out.end(), matched.begin(), matched.end());
  }
  return out;
}

std::vector<std::string> expand_shard_specs(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  for (const std::string& s : specs) {
    std::vector<std::string> e = expand_shard_spec(s);
    out.insert(out.end(), e.begin(), e.end());
  }
  return out;
}

Image decode_sample_image(const WebDatasetSample& sample, const DecodeOptions& options) {
  return decode_image(sample.image_bytes, sample.name(), options);
}

// ---------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------

struct WebDatasetReader::Impl {
  // A group of members sharing a key (one raw sample).
  struct Group {
    std::string key, shard;
    std::map<std::string, std::vector<uint8_t>> files;  // kept extensions only
    std::set<std::string> exts;                          // every extension seen
    std::string duplicate;                               // a repeated extension, if any
    bool empty() const { return exts.empty(); }
  };

  std::vector<std::string> shards;
  int rank = 0, world = 1;
  uint64_t seed = 0;
  WebDatasetOptions opt;

  int64_t epoch = 0;
  std::vector<std::string> epoch_shards;  // this rank's, in order
  size_t shard_pos = 0;                   // next shard to open / the open one
  archive* ar = nullptr;
  bool header_pending = false;  // the open archive is positioned at the data of pending_*
  std::string pending_key, pending_ext;
  Group current;
  bool exhausted = false;  // no more groups this epoch

  int64_t stream_index = 0;  // valid samples seen (before rank filtering in split mode)
  int64_t position = 0;      // samples returned this epoch
  std::deque<WebDatasetSample> buffer;
  std::mt19937_64 shuffle_rng;

  std::vector<std::string> bad;
  int64_t skipped = 0;

  ~Impl() { close(); }

  void close() {
    if (ar) archive_read_free(ar);
    ar = nullptr;
    header_pending = false;
  }

  bool split_by_sample() const { return static_cast<int64_t>(shards.size()) < world; }

  void start_epoch(int64_t e) {
    close();
    epoch = e;
    std::vector<std::string> order = shards;
    if (opt.shuffle_shards && order.size() > 1) {
      std::mt19937_64 rng(mix_seed({seed, static_cast<uint64_t>(e), 0x5348415244ULL /* "SHARD" */}));
      for (size_t i = order.size() - 1; i > 0; --i) {
        std::swap(order[i], order[static_cast<size_t>(uniform_int(rng, 0, static_cast<int64_t>(i)))]);
      }
    }
    epoch_shards.clear();
    if (split_by_sample()) {
      epoch_shards = order;
    } else {
      for (size_t i = static_cast<size_t>(rank); i < order.size(); i += static_cast<size_t>(world)) {
        epoch_shards.push_back(order[i]);
      }
    }
    shard_pos = 0;
    current = Group{};
    exhausted = false;
    stream_index = 0;
    position = 0;
    buffer.clear();
    shuffle_rng.seed(mix_seed({seed, static_cast<uint64_t>(e), static_cast<uint64_t>(rank), 0x42554646ULL}));
  }

  // A shard failed: record or throw. The open archive is closed and the
  // stream moves on to the next shard first, so a caught error can continue.
  void bad_shard(const std::string& shard, const std::string& why) {
    close();
    ++shard_pos;
    current = Group{};
    if (!opt.skip_bad_shards) {
      throw InputError("[WebDataset] shard '" + shard + "': " + why +
                       "; expected a readable (optionally compressed) tar file, re-create or remove the shard, "
                       "or set skip_bad_shards to skip it");
    }
    bad.push_back(shard + ": " + why);
  }

  std::string archive_error(const char* what) const {
    const char* s = ar ? archive_error_string(ar) : nullptr;
    return std::string(what) + (s ? std::string(" (") + s + ")" : std::string());
  }

  // Reads the data of the pending member into `current`.
  bool read_pending_into_current(const std::string& shard) {
    header_pending = false;
    if (current.empty()) {
      current.key = pending_key;
      current.shard = shard;
    }
    if (!current.exts.insert(pending_ext).second && current.duplicate.empty()) current.duplicate = pending_ext;
    if (!is_kept_ext(pending_ext)) {
      if (archive_read_data_skip(ar) != ARCHIVE_OK) {
        bad_shard(shard, archive_error("cannot skip member data, the file is truncated or corrupt"));
        return false;
      }
      return true;
    }
    std::vector<uint8_t>& data = current.files[pending_ext];
    data.clear();
    uint8_t buf[1 << 16];
    for (;;) {
      const la_ssize_t n = archive_read_data(ar, buf, sizeof buf);
      if (n == 0) break;
      if (n < 0) {
        bad_shard(shard, archive_error(("cannot read member '" + pending_key + "." + pending_ext +
                                        "', the file is truncated or corrupt").c_str()));
        return false;
      }
      data.insert(data.end(), buf, buf + n);
    }
    return true;
  }

  // The next group of members; false when the epoch's shards are done.
  bool next_group(Group* out) {
    while (!exhausted) {
      if (shard_pos >= epoch_shards.size()) {
        exhausted = true;
        break;
      }
      const std::string& shard = epoch_shards[shard_pos];
      if (!ar) {
        ar = archive_read_new();
        archive_read_support_filter_all(ar);
        archive_read_support_format_tar(ar);
        if (archive_read_open_filename(ar, shard.c_str(), 1 << 20) != ARCHIVE_OK) {
          bad_shard(shard, archive_error("cannot open"));
          continue;
        }
      }
      if (header_pending) {
        if (!read_pending_into_current(shard)) continue;
      }
      archive_entry* entry = nullptr;
      const int r = archive_read_next_header(ar, &entry);
      if (r == ARCHIVE_EOF) {
        close();
        ++shard_pos;
        if (!current.empty()) {  // samples never span shards
          *out = std::move(current);
          current = Group{};
          return true;
        }
        continue;
      }
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {  // ARCHIVE_RETRY (damaged header) / ARCHIVE_FAILED / ARCHIVE_FATAL
        bad_shard(shard, archive_error("not a readable tar archive or truncated / corrupt"));
        continue;
      }
      if (archive_entry_filetype(entry) != AE_IFREG) continue;
      const char* path = archive_entry_pathname(entry);
      std::string key, ext;
      if (!path || !split_member_name(path, &key, &ext)) continue;
      pending_key = key;
      pending_ext = ext;
      header_pending = true;
      if (!current.empty() && key != current.key) {
        *out = std::move(current);
        current = Group{};
        return true;  // the pending member starts the next group
      }
    }
    if (!current.empty()) {
      *out = std::move(current);
      current = Group{};
      return true;
    }
    return false;
  }

  // Fills `s` from `g`; an empty string on success, else why it is unusable.
  std::string build_sample(Group& g, WebDatasetSample* s) {
    if (!g.duplicate.empty()) return "has more than one '." + g.duplicate + "' member";
    s->key = g.key;
    s->shard = g.shard;
    s->image = Image{};
    s->image_bytes.clear();
    s->image_ext.clear();
    s->captions.clear();
    s->image_id = g.key;
    for (const char* e : kImageExts) {
      auto it = g.files.find(e);
      if (it != g.files.end()) {
        s->image_bytes = std::move(it->second);
        s->image_ext = e;
        break;
      }
    }
    if (s->image_ext.empty()) return "has no .jpg/.jpeg/.png/.webp member";
    auto js = g.files.find("json");
    if (js != g.files.end()) {
      json j;
      try {
        j = json::parse(js->second.begin(), js->second.end());
      } catch (const json::parse_error& e) {
        return "has an invalid .json member (byte " + std::to_string(e.byte) + ")";
      } catch (const json::exception& e) {  // out_of_range: a number beyond double (1e999)
        return std::string("has an invalid .json member (") + e.what() + ")";
      }
      if (!j.is_object()) return "has a .json member that is a " + std::string(j.type_name()) + ", not an object";
      for (const char* field : {"caption", "text"}) {
        auto c = j.find(field);
        if (c == j.end() || c->is_null()) continue;
        if (c->is_string()) {
          std::string t = trim(c->get<std::string>());
          if (!t.empty()) s->captions.push_back(std::move(t));
        } else if (c->is_array()) {
          for (const json& x : *c) {
            if (!x.is_string()) return std::string("has a .json \"") + field + "\" list with a non-string entry";
            std::string t = trim(x.get<std::string>());
            if (!t.empty()) s->captions.push_back(std::move(t));
          }
        } else {
          return std::string("has a .json \"") + field + "\" that is a " + c->type_name() +
                 ", expected a string or list of strings";
        }
        if (!s->captions.empty()) break;
      }
      auto id = j.find("image_id");
      if (id != j.end()) {
        if (id->is_string()) s->image_id = id->get<std::string>();
        else if (id->is_number_unsigned()) s->image_id = std::to_string(id->get<uint64_t>());
        else if (id->is_number_integer()) s->image_id = std::to_string(id->get<int64_t>());
      }
    }
    if (s->captions.empty()) {
      auto txt = g.files.find("txt");
      if (txt != g.files.end()) {
        std::string t = trim(std::string(txt->second.begin(), txt->second.end()));
        if (!t.empty()) s->captions.push_back(std::move(t));
      }
    }
    if (s->captions.empty()) return "has no non-blank caption (.json \"caption\"/\"text\" or .txt)";
    return "";
  }

  // The next valid sample of this rank, before the shuffle buffer.
  bool next_rank_sample(WebDatasetSample* s) {
    Group g;
    while (next_group(&g)) {
      const std::string why = build_sample(g, s);
      if (!why.empty()) {
        if (!opt.skip_bad_samples) {
          throw InputError("[WebDataset] shard '" + g.shard + "': sample '" + g.key + "' " + why +
                           "; fix the shard or set skip_bad_samples");
        }
        ++skipped;
        continue;
      }
      const int64_t i = stream_index++;
      if (split_by_sample() && i % world != rank) continue;
      return true;
    }
    return false;
  }

  // The next sample of the stream (after the shuffle buffer), not decoded.
  bool next_raw(WebDatasetSample* out) {
    if (opt.shuffle_buffer <= 0) {
      if (!next_rank_sample(out)) return false;
    } else {
      while (static_cast<int64_t>(buffer.size()) < opt.shuffle_buffer) {
        WebDatasetSample s;
        if (!next_rank_sample(&s)) break;
        buffer.push_back(std::move(s));
      }
      if (buffer.empty()) return false;
      const size_t k = static_cast<size_t>(uniform_int(shuffle_rng, 0, static_cast<int64_t>(buffer.size()) - 1));
      std::swap(buffer[k], buffer.back());
      *out = std::move(buffer.back());
      buffer.pop_back();
    }
    out->index = position++;
    return true;
  }
};

WebDatasetReader::WebDatasetReader(std::vector<std::string> shards, int rank, int world_size, uint64_t seed,
                                   WebDatasetOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    throw ConfigError("[WebDataset] rank " + std::to_string(rank) + " of world size " + std::to_string(world_size) +
                      "; expected world_size >= 1 and 0 <= rank < world_size");
  }
  if (options.shuffle_buffer < 0) {
    throw ConfigError("[WebDataset] shuffle_buffer = " + std::to_string(options.shuffle_buffer) +
                      "; expected >= 0 (0 = off)");
  }
  impl_->shards = expand_shard_specs(shards);
  if (impl_->shards.empty()) {
    throw ConfigError("[WebDataset] no shards given; expected tar paths or specs like \"data/shard-{000000..000009}.tar\"");
  }
  impl_->rank = rank;
  impl_->world = world_size;
  impl_->seed = seed;
  impl_->opt = options;
  impl_->start_epoch(0);
}

WebDatasetReader::~WebDatasetReader() = default;
WebDatasetReader::WebDatasetReader(WebDatasetReader&&) noexcept = default;
WebDatasetReader& WebDatasetReader::operator=(WebDatasetReader&&) noexcept = default;

bool WebDatasetReader::next(Sample* out) {
  if (!impl_->next_raw(out)) return false;
  if (impl_->opt.decode_images) out->image = decode_sample_image(*out, impl_->opt.decode);
  return true;
}

int64_t WebDatasetReader::skip(int64_t n) {
  int64_t done = 0;
  Sample s;
  while (done < n && impl_->next_raw(&s)) ++done;
  return done;
}

void WebDatasetReader::set_epoch(int64_t epoch) {
  if (epoch < 0) throw InputError("[WebDataset] set_epoch(" + std::to_string(epoch) + "); expected epoch >= 0");
  impl_->start_epoch(epoch);
}

int64_t WebDatasetReader::epoch() const { return impl_->epoch; }
int64_t WebDatasetReader::position() const { return impl_->position; }
const std::vector<std::string>& WebDatasetReader::shards() const { return impl_->shards; }
std::vector<std::string> WebDatasetReader::epoch_shards() const { return impl_->epoch_shards; }
bool WebDatasetReader::splits_by_sample() const { return impl_->split_by_sample(); }
int WebDatasetReader::rank() const { return impl_->rank; }
int WebDatasetReader::world_size() const { return impl_->world; }
uint64_t WebDatasetReader::seed() const { return impl_->seed; }
const std::vector<std::string>& WebDatasetReader::bad_shards() const { return impl_->bad; }
int64_t WebDatasetReader::skipped_samples() const { return impl_->skipped; }
void WebDatasetReader::set_decode_images(bool decode) { impl_->opt.decode_images = decode; }
const WebDatasetOptions& WebDatasetReader::options() const { return impl_->opt; }

}  // namespace blip2
