// The two halves of a collection index on synthetic data: the FAISS vector
// index (exactness of the flat index against brute force, IVF at full probe
// equal to exact, image-level grouping, crash-safe files whose damage is
// caught before FAISS parses them) and the SQLite catalog (round trip,
// transactions, generations, foreign and future files).
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "blip2/search/catalog.h"
#include "blip2/search/vector_index.h"
#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2::search {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// n L2-normalised vectors of dim, in 8 clusters.
std::vector<float> clustered(int64_t n, int64_t dim, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  auto centers = torch::randn({8, dim}, gen);
  auto v = centers.index_select(0, torch::randint(8, {n}, gen)) + 0.5 * torch::randn({n, dim}, gen);
  v = v / v.norm(2, -1, true);
  return std::vector<float>(v.data_ptr<float>(), v.data_ptr<float>() + n * dim);
}

std::vector<int64_t> iota_ids(int64_t n, int64_t offset = 0) {
  std::vector<int64_t> ids(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = offset + i;
  return ids;
}

// The n ids with the largest inner product with q, by brute force.
std::vector<int64_t> brute_force(const std::vector<float>& v, const std::vector<int64_t>& ids, int64_t dim,
                                 const float* q, int64_t n) {
  std::vector<std::pair<float, int64_t>> s;
  for (size_t i = 0; i < ids.size(); ++i) {
    float d = 0;
    for (int64_t j = 0; j < dim; ++j) d += v[i * dim + j] * q[j];
    s.emplace_back(-d, ids[i]);
  }
  std::sort(s.begin(), s.end());
  std::vector<int64_t> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(s[static_cast<size_t>(i)].second);
  return out;
}

TEST(VectorIndexTest, FlatSearchIsExactWithTheGivenIds) {
  const int64_t n = 600, dim = 24;
  auto v = clustered(n, dim, 1);
  auto ids = iota_ids(n, 1000);
  auto index = VectorIndex::build(dim, ids, v, VectorIndexKind::kFlat);
  EXPECT_EQ(index.size(), n);
  auto queries = clustered(5, dim, 2);
  auto lists = index.search(queries.data(), 5, 10);
  ASSERT_EQ(lists.size(), 5u);
  for (int64_t qi = 0; qi < 5; ++qi) {
    auto want = brute_force(v, ids, dim, queries.data() + qi * dim, 10);
    ASSERT_EQ(lists[qi].size(), 10u);
    for (size_t j = 0; j < 10; ++j) EXPECT_EQ(lists[qi][j].id, want[j]) << "query " << qi << " rank " << j;
    EXPECT_GE(lists[qi][0].score, lists[qi][9].score);
  }
  // Asking for more than there is returns what there is.
  EXPECT_EQ(index.search(queries.data(), 1, 10 * n)[0].size(), static_cast<size_t>(n));
}

TEST(VectorIndexTest, IvfAtFullProbeEqualsExactAndDefaultProbeRecallsMost) {
  const int64_t n = 8000, dim = 16;
  auto v = clustered(n, dim, 3);
  auto ids = iota_ids(n);
  auto ivf = VectorIndex::build(dim, ids, v, VectorIndexKind::kIvf);
  ASSERT_EQ(ivf.kind(), VectorIndexKind::kIvf);
  EXPECT_EQ(ivf.nlist(), 89);  // round(sqrt(8000))
  auto queries = clustered(20, dim, 4);
  double hit = 0;
  for (int64_t qi = 0; qi < 20; ++qi) {
    auto want = brute_force(v, ids, dim, queries.data() + qi * dim, 10);
    auto all = ivf.search(queries.data() + qi * dim, 1, 10, ivf.nlist())[0];
    ASSERT_EQ(all.size(), 10u);
    for (size_t j = 0; j < 10; ++j) EXPECT_EQ(all[j].id, want[j]);
    auto probed = ivf.search(queries.data() + qi * dim, 1, 10);
    for (auto& nb : probed[0]) hit += std::count(want.begin(), want.end(), nb.id);
  }
  EXPECT_GT(hit / 200, 0.5) << "recall@10 at the default nprobe";
}

TEST(VectorIndexTest, GroupsScoreByTheirBestVector) {
  // Group = id / 3: group 0 has ids 0-2, group 1 has 3-5, group 2 has 6-8.
  std::vector<std::vector<Neighbor>> lists = {{{4, 0.9f}, {0, 0.5f}, {7, 0.4f}}, {{1, 0.95f}, {8, 0.1f}}};
  auto g = best_groups(lists, 3, 2);
  ASSERT_EQ(g.size(), 2u);
  EXPECT_EQ(g[0].first, 0);
  EXPECT_FLOAT_EQ(g[0].second, 0.95f);
  EXPECT_EQ(g[1].first, 1);
  EXPECT_EQ(best_groups(lists, 3, 10).size(), 3u);
}

TEST(VectorIndexTest, FilesRoundTripAndDamageIsCaughtBeforeFaissReadsIt) {
  TempDir tmp;
  const int64_t n = 300, dim = 8;
  auto v = clustered(n, dim, 5);
  auto index = VectorIndex::build(dim, iota_ids(n), v, VectorIndexKind::kFlat);
  const std::string path = tmp.file("v.faiss");
  FileStamp stamp = index.write(path);
  EXPECT_EQ(stamp.bytes, static_cast<int64_t>(fs::file_size(path)));
  EXPECT_EQ(stamp.hash, file_content_hash(path));
  for (auto& e : fs::directory_iterator(tmp.path())) EXPECT_EQ(e.path().filename(), "v.faiss");  // no temporary left
  auto back = VectorIndex::read(path, stamp);
  auto q = clustered(1, dim, 6);
  EXPECT_EQ(back.search(q.data(), 1, 5)[0][0].id, index.search(q.data(), 1, 5)[0][0].id);

  {  // one flipped byte, same size
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(40);
    f.put('\x7f');
  }
  EXPECT_THROW_WITH(VectorIndex::read(path, stamp), IndexError, "does not match the hash");
  fs::resize_file(path, 100);
  EXPECT_THROW_WITH(VectorIndex::read(path, stamp), IndexError, "truncated or replaced");
  fs::remove(path);
  EXPECT_THROW_WITH(VectorIndex::read(path, stamp), IndexError, "missing");
}

TEST(VectorIndexTest, ContentHashSeesEveryByteAndTheLength) {
  std::string a(1000, 'x'), b = a;
  b[999] = 'y';
  EXPECT_EQ(content_hash(a.data(), a.size()), content_hash(a.data(), a.size()));
  EXPECT_NE(content_hash(a.data(), a.size()), content_hash(b.data(), b.size()));
  EXPECT_NE(content_hash(a.data(), 999), content_hash(a.data(), 1000));
  EXPECT_EQ(content_hash(a.data(), 0).size(), 16u);
}

CatalogMeta meta(int64_t q = 2, int64_t e = 3) {
  CatalogMeta m;
  m.model_fingerprint = "abc";
  m.model_dir = "/models/x";
  m.images_root = "/photos";
  m.queries = q;
  m.dim = e;
  return m;
}

ImageRow row(const std::string& path, int64_t size = 10) {
  ImageRow r;
  r.path = path;
  r.size = size;
  r.mtime_ns = 1;
  r.hash = "h" + path;
  r.width = 4;
  r.height = 5;
  return r;
}

TEST(CatalogTest, ChangesAreTransactionsThatBumpTheGeneration) {
  TempDir tmp;
  const std::string path = tmp.file("c.sqlite");
  {
    auto c = Catalog::create(path, meta());
    EXPECT_EQ(c.meta().generation, 0);
    Catalog::Change ch;
    ch.added = {row("a.png"), row("b.png")};
    ch.added_vectors = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    c.apply(ch);
    EXPECT_EQ(c.meta().generation, 1);
    EXPECT_GT(ch.added[1].id, ch.added[0].id);
    auto e = c.embedding(ch.added[1].id);
    EXPECT_EQ(e, (std::vector<float>{7, 8, 9, 10, 11, 12}));

    // A failing change (a duplicate path) leaves nothing behind.
    Catalog::Change bad;
    bad.added = {row("c.png"), row("a.png")};
    bad.added_vectors.assign(12, 0.f);
    EXPECT_THROW(c.apply(bad), IndexError);
    EXPECT_EQ(c.image_count(), 2);
    EXPECT_EQ(c.meta().generation, 1);

    Catalog::Change ch2;
    ch2.removed = {ch.added[0].id};
    ImageRow t = c.images()[1];
    t.size = 99;
    ch2.touched = {t};
    c.apply(ch2);
    c.set_vectors_stamp({2, 123, "ffff", "flat"});
  }
  auto c = Catalog::open(path);
  EXPECT_EQ(c.meta().generation, 2);
  EXPECT_EQ(c.meta().images_root, "/photos");
  auto rows = c.images();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].path, "b.png");
  EXPECT_EQ(rows[0].size, 99);
  std::vector<int64_t> ids;
  std::vector<float> v;
  c.embeddings(ids, v);
  EXPECT_EQ(v, (std::vector<float>{7, 8, 9, 10, 11, 12}));
  auto s = c.vectors_stamp();
  EXPECT_EQ(s.generation, 2);
  EXPECT_EQ(s.bytes, 123);
  EXPECT_EQ(s.hash, "ffff");
  EXPECT_THROW_WITH(Catalog::create(path, meta()), IndexError, "already exists");
}

TEST(CatalogTest, ForeignFutureAndMissingFilesAreClearErrors) {
  TempDir tmp;
  EXPECT_THROW_WITH(Catalog::open(tmp.file("none.sqlite")), IndexError, "does not exist");
  EXPECT_THROW_WITH(Catalog::open(tmp.path()), IndexError, "is not a file");
  std::ofstream(tmp.file("junk.sqlite")) << std::string(5000, 'j');
  EXPECT_THROW_WITH(Catalog::open(tmp.file("junk.sqlite")), IndexError, "is not a blip2cpp index catalog");

  const std::string path = tmp.file("c.sqlite");
  Catalog::create(path, meta());
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE meta SET value='7' WHERE key='version'", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  EXPECT_THROW_WITH(Catalog::open(path), IndexError, "format version 7");

  // Another program's SQLite database.
  ASSERT_EQ(sqlite3_open(tmp.file("other.sqlite").c_str(), &db), SQLITE_OK);
  sqlite3_exec(db, "CREATE TABLE t(x); CREATE TABLE meta(key TEXT, value TEXT);", nullptr, nullptr, nullptr);
  sqlite3_close(db);
  EXPECT_THROW_WITH(Catalog::open(tmp.file("other.sqlite")), IndexError, "no format 'blip2cpp-index'");
}

}  // namespace
}  // namespace blip2::search
