#include "blip2/search/catalog.h"

#include <sqlite3.h>

#include <filesystem>
#include <map>
#include <utility>

#include "blip2/util/error.h"

namespace fs = std::filesystem;

namespace blip2::search {

namespace {

// One prepared statement; finalised on scope exit.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql, const std::string& where) : db_(db), where_(where) {
    if (sqlite3_prepare_v2(db, sql, -1, &s_, nullptr) != SQLITE_OK) fail("preparing a query");
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  Stmt& bind(int i, int64_t v) { return check(sqlite3_bind_int64(s_, i, v)); }
  Stmt& bind(int i, const std::string& v) {
    return check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT));
  }
  Stmt& bind_blob(int i, const void* data, size_t n) {
    return check(sqlite3_bind_blob64(s_, i, data, n, SQLITE_STATIC));
  }
  // True while a row is available.
  bool step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc != SQLITE_DONE) fail("reading or writing");
    return false;
  }
  void run() {
    step();
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  int64_t integer(int col) const { return sqlite3_column_int64(s_, col); }
  std::string text(int col) const {
    auto p = sqlite3_column_text(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), sqlite3_column_bytes(s_, col)) : std::string();
  }
  const void* blob(int col, size_t& n) const {
    n = static_cast<size_t>(sqlite3_column_bytes(s_, col));
    return sqlite3_column_blob(s_, col);
  }

 private:
  Stmt& check(int rc) {
    if (rc != SQLITE_OK) fail("binding a value");
    return *this;
  }
  [[noreturn]] void fail(const char* doing) const {
    throw IndexError(where_ + ": SQLite error " + doing + ": " + sqlite3_errmsg(db_) +
                     (sqlite3_errcode(db_) == SQLITE_FULL ? " (the disk is full; the index keeps its last committed state)" : ""));
  }
  sqlite3* db_;
  sqlite3_stmt* s_ = nullptr;
  std::string where_;
};

int64_t to_int(const std::string& key, const std::string& value, const std::string& where) {
  try {
    size_t used = 0;
    int64_t v = std::stoll(value, &used);
    if (used == value.size()) return v;
  } catch (const std::exception&) {
  }
  throw IndexError(where + ": meta value '" + key + "' = '" + value + "' is not an integer; the index is damaged, rebuild it");
}

}  // namespace

Catalog::Catalog(Catalog&& o) noexcept { *this = std::move(o); }
Catalog& Catalog::operator=(Catalog&& o) noexcept {
  if (this != &o) {
    if (db_) sqlite3_close(db_);
    path_ = std::move(o.path_);
    meta_ = std::move(o.meta_);
    db_ = std::exchange(o.db_, nullptr);
  }
  return *this;
}
Catalog::~Catalog() {
  if (db_) sqlite3_close(db_);
}

void Catalog::exec(const char* sql) const {
  char* msg = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &msg) != SQLITE_OK) {
    std::string m = msg ? msg : sqlite3_errmsg(db_);
    sqlite3_free(msg);
    bool full = sqlite3_errcode(db_) == SQLITE_FULL;
    throw IndexError(path_ + ": SQLite: " + m + (full ? " (the disk is full; the index keeps its last committed state)" : ""));
  }
}

void Catalog::write_meta(const std::string& key, const std::string& value) {
  Stmt(db_, "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", path_).bind(1, key).bind(2, value).run();
}

Catalog Catalog::create(const std::string& path, const CatalogMeta& meta) {
  if (fs::exists(path)) throw IndexError(path + " already exists; open it instead of creating it");
  Catalog c;
  c.path_ = path;
  if (sqlite3_open_v2(path.c_str(), &c.db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) != SQLITE_OK)
    throw IndexError(path + ": cannot create the index catalog: " + sqlite3_errmsg(c.db_));
  c.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;");
  c.exec("BEGIN");
  c.exec(
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
      "CREATE TABLE images(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT UNIQUE NOT NULL, size INTEGER NOT NULL,"
      " mtime_ns INTEGER NOT NULL, hash TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,"
      " embedding BLOB NOT NULL);");
  c.write_meta("format", kIndexFormat);
  c.write_meta("version", std::to_string(kIndexVersion));
  c.write_meta("model_fingerprint", meta.model_fingerprint);
  c.write_meta("model_dir", meta.model_dir);
  c.write_meta("images_root", meta.images_root);
  c.write_meta("queries", std::to_string(meta.queries));
  c.write_meta("dim", std::to_string(meta.dim));
  c.write_meta("generation", "0");
  c.write_meta("vectors_generation", "-1");
  c.exec("COMMIT");
  c.meta_ = meta;
  c.meta_.generation = 0;
  return c;
}

Catalog Catalog::open(const std::string& path) {
  if (!fs::exists(path)) throw IndexError(path + " does not exist: no index here (make one with `blip2 index build`)");
  if (!fs::is_regular_file(path)) throw IndexError(path + " is not a file: expected the index's catalog.sqlite");
  Catalog c;
  c.path_ = path;
  if (sqlite3_open_v2(path.c_str(), &c.db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK)
    throw IndexError(path + ": cannot open the index catalog: " + sqlite3_errmsg(c.db_));
  c.read_meta();
  return c;
}

void Catalog::read_meta() {
  std::string bad = path_ + " is not a blip2cpp index catalog";
  std::map<std::string, std::string> kv;
  try {
    Stmt s(db_, "SELECT key, value FROM meta", path_);
    while (s.step()) kv[s.text(0)] = s.text(1);
  } catch (const IndexError&) {  // not a database, or no meta table
    throw IndexError(bad + " (" + sqlite3_errmsg(db_) + "); rebuild it with `blip2 index build`");
  }
  if (kv["format"] != kIndexFormat) throw IndexError(bad + " (its meta table has no format '" + std::string(kIndexFormat) + "')");
  int64_t version = to_int("version", kv["version"], path_);
  if (version != kIndexVersion)
    throw IndexError(path_ + " is an index of format version " + std::to_string(version) + "; this blip2 reads version " +
                     std::to_string(kIndexVersion) + ": rebuild it with this version's `blip2 index build`");
  for (const char* key : {"model_fingerprint", "model_dir", "images_root", "queries", "dim", "generation"})
    if (!kv.count(key)) throw IndexError(bad + " (meta has no '" + key + "'); rebuild it");
  meta_.model_fingerprint = kv["model_fingerprint"];
  meta_.model_dir = kv["model_dir"];
  meta_.images_root = kv["images_root"];
  meta_.queries = to_int("queries", kv["queries"], path_);
  meta_.dim = to_int("dim", kv["dim"], path_);
  meta_.generation = to_int("generation", kv["generation"], path_);
  if (meta_.queries < 1 || meta_.dim < 1) throw IndexError(bad + " (queries or dim < 1); rebuild it");
}

std::vector<ImageRow> Catalog::images() const {
  std::vector<ImageRow> rows;
  Stmt s(db_, "SELECT id, path, size, mtime_ns, hash, width, height FROM images ORDER BY id", path_);
  while (s.step())
    rows.push_back({s.integer(0), s.text(1), s.integer(2), s.integer(3), s.text(4), s.integer(5), s.integer(6)});
  return rows;
}

int64_t Catalog::image_count() const {
  Stmt s(db_, "SELECT COUNT(*) FROM images", path_);
  return s.step() ? s.integer(0) : 0;
}

std::optional<ImageRow> Catalog::image(int64_t id) const {
  Stmt s(db_, "SELECT id, path, size, mtime_ns, hash, width, height FROM images WHERE id = ?", path_);
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return ImageRow{s.integer(0), s.text(1), s.integer(2), s.integer(3), s.text(4), s.integer(5), s.integer(6)};
}

const float* Catalog::embedding_blob(const void* blob, size_t bytes, int64_t id) const {
  const size_t want = static_cast<size_t>(meta_.queries * meta_.dim) * sizeof(float);
  if (bytes != want)
    throw IndexError(path_ + ": image " + std::to_string(id) + " has an embedding of " + std::to_string(bytes) +
                     " bytes, expected " + std::to_string(want) + "; the index is damaged, rebuild it");
  return static_cast<const float*>(blob);
}

std::vector<float> Catalog::embedding(int64_t id) const {
  Stmt s(db_, "SELECT embedding FROM images WHERE id = ?", path_);
  s.bind(1, id);
  if (!s.step()) return {};
  size_t n = 0;
  const void* blob = s.blob(0, n);  // sets n
  const float* p = embedding_blob(blob, n, id);
  return std::vector<float>(p, p + n / sizeof(float));
}

void Catalog::embeddings(std::vector<int64_t>& ids, std::vector<float>& vectors) const {
  const size_t per = static_cast<size_t>(meta_.queries * meta_.dim);
  ids.clear();
  vectors.clear();
  vectors.reserve(static_cast<size_t>(image_count()) * per);
  Stmt s(db_, "SELECT id, embedding FROM images ORDER BY id", path_);
  while (s.step()) {
    size_t n = 0;
    const void* blob = s.blob(1, n);  // sets n
    const float* p = embedding_blob(blob, n, s.integer(0));
    ids.push_back(s.integer(0));
    vectors.insert(vectors.end(), p, p + per);
  }
}

void Catalog::apply(Change& c) {
  if (c.empty()) return;
  const size_t per = static_cast<size_t>(meta_.queries * meta_.dim);
  if (c.added_vectors.size() != c.added.size() * per || c.changed_vectors.size() != c.changed.size() * per)
    throw InputError("Catalog::apply: embeddings do not match the rows (" + std::to_string(per) + " floats per image)");
  exec("BEGIN IMMEDIATE");
  try {
    {
      Stmt ins(db_, "INSERT INTO images(path, size, mtime_ns, hash, width, height, embedding) VALUES (?,?,?,?,?,?,?)", path_);
      for (size_t i = 0; i < c.added.size(); ++i) {
        auto& r = c.added[i];
        ins.bind(1, r.path).bind(2, r.size).bind(3, r.mtime_ns).bind(4, r.hash).bind(5, r.width).bind(6, r.height);
        ins.bind_blob(7, c.added_vectors.data() + i * per, per * sizeof(float)).run();
        r.id = sqlite3_last_insert_rowid(db_);
      }
    }
    {
      Stmt upd(db_, "UPDATE images SET size=?, mtime_ns=?, hash=?, width=?, height=?, embedding=? WHERE id=?", path_);
      for (size_t i = 0; i < c.changed.size(); ++i) {
        auto& r = c.changed[i];
        upd.bind(1, r.size).bind(2, r.mtime_ns).bind(3, r.hash).bind(4, r.width).bind(5, r.height);
        upd.bind_blob(6, c.changed_vectors.data() + i * per, per * sizeof(float)).bind(7, r.id).run();
      }
    }
    {
      Stmt touch(db_, "UPDATE images SET size=?, mtime_ns=? WHERE id=?", path_);
      for (auto& r : c.touched) touch.bind(1, r.size).bind(2, r.mtime_ns).bind(3, r.id).run();
    }
    {
      Stmt del(db_, "DELETE FROM images WHERE id=?", path_);
      for (int64_t id : c.removed) del.bind(1, id).run();
    }
    write_meta("generation", std::to_string(meta_.generation + 1));
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
  ++meta_.generation;
}

Catalog::VectorsStamp Catalog::vectors_stamp() const {
  VectorsStamp v;
  Stmt s(db_, "SELECT key, value FROM meta WHERE key LIKE 'vectors_%'", path_);
  while (s.step()) {
    std::string k = s.text(0), value = s.text(1);
    if (k == "vectors_generation") v.generation = to_int(k, value, path_);
    if (k == "vectors_bytes") v.bytes = to_int(k, value, path_);
    if (k == "vectors_hash") v.hash = value;
    if (k == "vectors_kind") v.kind = value;
  }
  return v;
}

void Catalog::set_vectors_stamp(const VectorsStamp& v) {
  exec("BEGIN IMMEDIATE");
  try {
    write_meta("vectors_generation", std::to_string(v.generation));
    write_meta("vectors_bytes", std::to_string(v.bytes));
    write_meta("vectors_hash", v.hash);
    write_meta("vectors_kind", v.kind);
    exec("COMMIT");
  } catch (...) {
    sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace blip2::search
