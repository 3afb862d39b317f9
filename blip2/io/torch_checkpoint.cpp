#include "blip2/io/torch_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <unordered_map>

#include "blip2/util/error.h"

namespace blip2::io {

namespace {

// ---------------------------------------------------------------- helpers

std::string hex2(unsigned v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02x", v & 0xffu);
  return b;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::string join_names(const std::vector<std::string>& names, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", " : "") + quoted(names[i]);
  if (names.size() > max) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return "[" + s + "]";
}

uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t rd64(const uint8_t* p) { return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > UINT64_MAX / a) return true;
  *out = a * b;
  return false;
}

// ---------------------------------------------------------------- CRC-32 (zip's, reflected 0xEDB88320), slice-by-8

struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
      t[0][i] = c;
    }
    for (int k = 1; k < 8; ++k)
      for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xff];
  }
};

uint32_t crc32_update(uint32_t crc, const uint8_t* p, uint64_t n) {
  static const CrcTables tables;
  const auto& T = tables.t;
  crc = ~crc;
  while (n >= 8) {
    uint32_t a = crc ^ rd32(p);
    uint32_t b = rd32(p + 4);
    crc = T[7][a & 0xff] ^ T[6][(a >> 8) & 0xff] ^ T[5][(a >> 16) & 0xff] ^ T[4][a >> 24] ^
          T[3][b & 0xff] ^ T[2][(b >> 8) & 0xff] ^ T[1][(b >> 16) & 0xff] ^ T[0][b >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = T[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

// ---------------------------------------------------------------- dtypes

struct StorageDType {
  const char* storage;  // torch.<X>Storage
  const char* dtype;    // torch.<x> (and an alias)
  const char* alias;
  at::ScalarType scalar;
  size_t size;
};

const StorageDType kStorageDTypes[] = {
    {"FloatStorage", "float32", "float", at::kFloat, 4},
    {"HalfStorage", "float16", "half", at::kHalf, 2},
    {"BFloat16Storage", "bfloat16", "bfloat16", at::kBFloat16, 2},
    {"DoubleStorage", "float64", "double", at::kDouble, 8},
    {"LongStorage", "int64", "long", at::kLong, 8},
    {"IntStorage", "int32", "int", at::kInt, 4},
    {"ShortStorage", "int16", "short", at::kShort, 2},
    {"CharStorage", "int8", "int8", at::kChar, 1},
    {"ByteStorage", "uint8", "uint8", at::kByte, 1},
    {"BoolStorage", "bool", "bool", at::kBool, 1},
};

const StorageDType* by_storage_name(const std::string& n) {
  for (const auto& d : kStorageDTypes)
    if (n == d.storage) return &d;
  return nullptr;
}
const StorageDType* by_dtype_name(const std::string& n) {
  for (const auto& d : kStorageDTypes)
    if (n == d.dtype || n == d.alias) return &d;
  return nullptr;
}
const StorageDType* by_scalar(at::ScalarType t) {
  for (const auto& d : kStorageDTypes)
    if (t == d.scalar) return &d;
  return nullptr;
}

// ---------------------------------------------------------------- the file, mapped copy-on-write

struct Mapping {
  uint8_t* data = nullptr;
  uint64_t size = 0;
  bool read_only = false;  // tensors must then be copies
  ~Mapping() {
    if (data) ::munmap(data, size);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  const std::string where = "PyTorch checkpoint '" + path + "'";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw CheckpointError("cannot open " + where + ": " + std::strerror(errno) +
                          "; check the path and that the file is readable");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CheckpointError(where + " is not a regular file");
  }
  auto m = std::make_shared<Mapping>();
  m->size = static_cast<uint64_t>(st.st_size);
  if (m->size == 0) {
    ::close(fd);
    throw CheckpointError(where + " is empty (0 bytes): truncated download or failed save?");
  }
  void* p = ::mmap(nullptr, m->size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED && errno == ENOMEM) {
    // A writable private mapping counts against the commit limit; a file
    // larger than RAM + swap can still be mapped read-only (and copied out).
    p = ::mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    m->read_only = true;
  }
  ::close(fd);
  if (p == MAP_FAILED) throw CheckpointError("cannot memory-map " + where + ": " + std::strerror(errno));
  m->data = static_cast<uint8_t*>(p);
  return m;
}

// ---------------------------------------------------------------- zip reader

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;
  uint64_t size = 0;
  uint32_t crc = 0;
  bool crc_checked = false;
};

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50,
                   kZip64EocdSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;

class ZipArchive {
 public:
  ZipArchive(std::shared_ptr<Mapping> m, std::string path) : m_(std::move(m)), path_(std::move(path)) { parse(); }

  const ZipEntry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
  }
  const std::vector<ZipEntry>& entries() const { return entries_; }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (const auto& e : entries_) n.push_back(e.name);
    return n;
  }
  // The entry's bytes, CRC-checked the first time.
  const uint8_t* data(const ZipEntry& e) {
    const uint8_t* p = m_->data + e.data_offset;
    if (!e.crc_checked) {
      uint32_t c = crc32_update(0, p, e.size);
      if (c != e.crc)
        throw CheckpointError(where() + ": zip entry '" + e.name + "' is corrupt: CRC-32 " + hex32(c) +
                              " of its " + std::to_string(e.size) + " bytes, the directory records " +
                              hex32(e.crc) + "; the file was damaged after it was written (re-download it)");
      const_cast<ZipEntry&>(e).crc_checked = true;
    }
    return p;
  }
  const std::shared_ptr<Mapping>& mapping() const { return m_; }
  std::string where() const { return "PyTorch checkpoint '" + path_ + "'"; }

 private:
  static std::string hex32(uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%08x", v);
    return b;
  }

  [[noreturn]] void fail(const std::string& what) const { throw CheckpointError(where() + ": " + what); }

  void parse() {
    const uint8_t* b = m_->data;
    const uint64_t n = m_->size;
    // torch.save before 1.6 (or with _use_new_zipfile_serialization=False)
    // writes a bare pickle stream (starts with PROTO) or, before 0.4, a tar.
    const bool is_pickle = b[0] == 0x80 && n >= 2 && b[1] <= 5;
    const bool is_tar = n >= 262 && std::memcmp(b + 257, "ustar", 5) == 0;
    if (is_pickle || is_tar)
      fail("legacy (non-zip) .pth format is not supported; re-save with torch.save in PyTorch >= 1.6 "
           "(torch.save(torch.load(f), f) converts it)");
    if (n < 22) fail("not a zip archive (" + std::to_string(n) + " bytes, too short): truncated or not a torch.save file");

    // End of central directory: the last 22 + comment bytes.
    uint64_t eocd = UINT64_MAX;
    const uint64_t lowest = n > 22 + 65535 ? n - 22 - 65535 : 0;
    for (uint64_t pos = n - 22 + 1; pos-- > lowest;) {
      if (rd32(b + pos) == kEocdSig && pos + 22 + rd16(b + pos + 20) <= n) {
        eocd = pos;
        break;
      }
    }
    if (eocd == UINT64_MAX) {
      if (rd32(b) == kLocalSig)
        fail("zip archive is truncated: no end-of-central-directory record in its last bytes (" +
             std::to_string(n) + " bytes in all); the download or save did not finish");
      fail("not a zip archive (no end-of-central-directory record, starts with bytes " + hex2(b[0]) + " " +
           hex2(b[1]) + "): not a file written by torch.save");
    }
    if (rd16(b + eocd + 4) != 0 || rd16(b + eocd + 6) != 0) fail("multi-disk (split) zip archives are not supported");
    uint64_t count = rd16(b + eocd + 10);
    uint64_t cd_size = rd32(b + eocd + 12);
    uint64_t cd_off = rd32(b + eocd + 16);
    uint64_t cd_limit = eocd;  // the central directory ends before this

    // ZIP64: a locator right before the EOCD points at the ZIP64 EOCD record.
    if (eocd >= 20 && rd32(b + eocd - 20) == kZip64LocatorSig) {
      uint64_t z = rd64(b + eocd - 20 + 8);
      if (z > eocd - 20 || eocd - 20 - z < 56 || rd32(b + z) != kZip64EocdSig)
        fail("ZIP64 locator points at offset " + std::to_string(z) + ", where there is no ZIP64 end-of-central-directory record");
      count = rd64(b + z + 32);
      cd_size = rd64(b + z + 40);
      cd_off = rd64(b + z + 48);
      cd_limit = z;
    } else if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
      fail("the end-of-central-directory record defers to a ZIP64 record that is missing");
    }
    if (cd_off > cd_limit || cd_size > cd_limit - cd_off)
      fail("central directory (offset " + std::to_string(cd_off) + ", " + std::to_string(cd_size) +
           " bytes) lies outside the file (" + std::to_string(n) + " bytes): truncated or corrupt");
    if (count > cd_size / 46) fail("central directory claims " + std::to_string(count) + " entries in " + std::to_string(cd_size) + " bytes");

    uint64_t p = cd_off;
    const uint64_t end = cd_off + cd_size;
    for (uint64_t i = 0; i < count; ++i) {
      if (end - p < 46 || rd32(b + p) != kCentralSig)
        fail("central directory entry " + std::to_string(i) + " at offset " + std::to_string(p) + " is corrupt");
      const uint16_t flags = rd16(b + p + 8), method = rd16(b + p + 10);
      const uint32_t crc = rd32(b + p + 16);
      uint64_t csize = rd32(b + p + 20), usize = rd32(b + p + 24);
      const uint64_t nlen = rd16(b + p + 28), xlen = rd16(b + p + 30), clen = rd16(b + p + 32);
      uint64_t local = rd32(b + p + 42);
      if (end - p - 46 < nlen + xlen + clen)
        fail("central directory entry " + std::to_string(i) + " runs past the directory's end");
      ZipEntry e;
      e.name.assign(reinterpret_cast<const char*>(b + p + 46), nlen);
      // ZIP64 extended information: the 8-byte values of the fields set to 0xffffffff, in order.
      const uint8_t* x = b + p + 46 + nlen;
      for (uint64_t q = 0; q + 4 <= xlen;) {
        const uint16_t id = rd16(x + q), len = rd16(x + q + 2);
        if (q + 4 + len > xlen) fail("zip entry '" + e.name + "' has a malformed extra field");
        if (id == 1) {
          uint64_t r = q + 4;
          const uint64_t rend = q + 4 + len;
          for (uint64_t* field : {&usize, &csize, &local}) {
            if (*field != 0xffffffffu) continue;
            if (rend - r < 8) fail("zip entry '" + e.name + "' has a truncated ZIP64 extra field");
            *field = rd64(x + r);
            r += 8;
          }
        }
        q += 4 + len;
      }
      if (flags & 1) fail("zip entry '" + e.name + "' is encrypted");
      if (method != 0)
        fail("zip entry '" + e.name + "' is compressed (method " + std::to_string(method) +
             "); torch.save writes stored (uncompressed) entries: was the file re-zipped?");
      if (csize != usize) fail("zip entry '" + e.name + "' is stored but its sizes differ");
      if (local > n || n - local < 30 || rd32(b + local) != kLocalSig)
        fail("zip entry '" + e.name + "': no local header at offset " + std::to_string(local) + " (truncated or corrupt)");
      const uint64_t lnlen = rd16(b + local + 26), lxlen = rd16(b + local + 28);
      if (n - local - 30 < lnlen + lxlen) fail("zip entry '" + e.name + "': local header runs past the end of the file");
      if (lnlen != nlen || std::memcmp(b + local + 30, e.name.data(), nlen) != 0)
        fail("zip entry '" + e.name + "': its local header names another file (corrupt archive)");
      e.data_offset = local + 30 + lnlen + lxlen;
      e.size = usize;
      e.crc = crc;
      if (e.size > n - e.data_offset)
        fail("zip entry '" + e.name + "' (" + std::to_string(e.size) + " bytes at offset " +
             std::to_string(e.data_offset) + ") extends past the end of the file (" + std::to_string(n) +
             " bytes): truncated");
      if (!by_name_.emplace(e.name, entries_.size()).second) fail("zip entry '" + e.name + "' appears twice");
      entries_.push_back(std::move(e));
      p += 46 + nlen + xlen + clen;
    }
  }

  std::shared_ptr<Mapping> m_;
  std::string path_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, size_t> by_name_;
};

// ---------------------------------------------------------------- pickle objects

struct PyObj {
  enum class K { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Object, Storage, Tensor };
  K k = K::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;            // Str/Bytes: text; Global: module, name; Object: class; Storage: key
  std::vector<PyObj*> items;    // Tuple/List/Set: items; Dict/Object: keys (Object: also args)
  std::vector<PyObj*> values;   // Dict/Object: values
  // Storage: dtype, numel. Tensor: storage (key, dtype), offset, size, stride.
  const StorageDType* dtype = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};
using K = PyObj::K;

std::string describe(const PyObj* o) {
  switch (o->k) {
    case K::None: return "None";
    case K::Bool: return "a bool";
    case K::Int: case K::BigInt: return "an int";
    case K::Float: return "a float";
    case K::Str: return "a string";
    case K::Bytes: return "bytes";
    case K::Tuple: return "a tuple";
    case K::List: return "a list";
    case K::Dict: return "a dict";
    case K::Set: return "a set";
    case K::Global: return "a reference to " + o->s + "." + o->s2;
    case K::Object: return "an object of class " + o->s;
    case K::Storage: return "a storage";
    case K::Tensor: return "a tensor";
  }
  return "?";
}

// The pickle VM. Objects live in an arena (no reference cycles to leak, no
// deep recursive destruction); every read is bounds-checked.
class Unpickler {
 public:
  using PersistentLoad = std::function<PyObj*(Unpickler&, PyObj* pid)>;

  Unpickler(const uint8_t* data, uint64_t size, std::string where, PersistentLoad pl)
      : p_(data), n_(size), where_(std::move(where)), persistent_load_(std::move(pl)) {}

  PyObj* make(K k) {
    arena_.emplace_back();
    arena_.back().k = k;
    return &arena_.back();
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw CheckpointError(where_ + ": " + what + " (at offset " + std::to_string(op_pos_) + ")");
  }

  PyObj* run();

 private:
  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_)
      fail("pickle is truncated: opcode " + hex2(op_) + " needs " + std::to_string(k) + " bytes, " +
           std::to_string(n_ - pos_) + " left");
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  uint8_t u8() { return *take(1); }
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) fail("pickle is truncated: opcode " + hex2(op_) + " needs a newline-terminated argument");
    const uint64_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
    std::string s(reinterpret_cast<const char*>(take(len)), len);
    pos_++;  // the newline
    return s;
  }
  std::string bytes(uint64_t len) { return std::string(reinterpret_cast<const char*>(take(len)), len); }

  void push(PyObj* o) { stack_.push_back(o); }
  PyObj* pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back()))
      fail("pickle stack underflow at opcode " + hex2(op_));
    PyObj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyObj* top() {
    if (stack_.empty()) fail("pickle stack is empty at opcode " + hex2(op_));
    return stack_.back();
  }
  std::vector<PyObj*> pop_mark() {
    if (marks_.empty()) fail("opcode " + hex2(op_) + " without a MARK");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyObj*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PyObj* make_int(int64_t v) {
    PyObj* o = make(K::Int);
    o->i = v;
    return o;
  }
  PyObj* make_str(K k, std::string s) {
    PyObj* o = make(k);
    o->s = std::move(s);
    return o;
  }
  PyObj* make_seq(K k, std::vector<PyObj*> items) {
    PyObj* o = make(k);
    o->items = std::move(items);
    return o;
  }
  PyObj* make_long(const uint8_t* d, uint64_t len) {
    if (len == 0) return make_int(0);
    const bool neg = d[len - 1] & 0x80;
    bool fits = true;
    for (uint64_t j = 8; j < len; ++j) fits = fits && d[j] == (neg ? 0xff : 0x00);
    if (len >= 8) fits = fits && (((d[7] & 0x80) != 0) == neg);
    if (!fits) return make(K::BigInt);
    uint64_t v = neg ? ~uint64_t{0} : 0;
    for (uint64_t j = 0; j < std::min<uint64_t>(len, 8); ++j) {
      v &= ~(uint64_t{0xff} << (8 * j));
      v |= uint64_t{d[j]} << (8 * j);
    }
    return make_int(static_cast<int64_t>(v));
  }
  PyObj* memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("pickle memo has no entry " + std::to_string(idx));
    return it->second;
  }
  void set_items(PyObj* target, const std::vector<PyObj*>& kv) {
    if (target->k != K::Dict && target->k != K::Object)
      fail("SETITEM(S) on " + describe(target) + ", not a dict");
    if (kv.size() % 2) fail("SETITEMS with an odd number of items");
    for (size_t j = 0; j < kv.size(); j += 2) {
      target->items.push_back(kv[j]);
      target->values.push_back(kv[j + 1]);
    }
  }
  void append(PyObj* target, const std::vector<PyObj*>& items) {
    if (target->k != K::List && target->k != K::Object && target->k != K::Set)
      fail("APPEND(S) on " + describe(target) + ", not a list");
    // Objects (list subclasses) keep appended items among their args.
    target->items.insert(target->items.end(), items.begin(), items.end());
  }
  PyObj* reduce(PyObj* callable, PyObj* args);
  PyObj* rebuild_tensor(const std::string& fn, const std::vector<PyObj*>& a, const StorageDType* dtype);

  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::string where_;
  PersistentLoad persistent_load_;
  std::deque<PyObj> arena_;
  std::vector<PyObj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyObj*> memo_;
};

PyObj* Unpickler::run() {
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) fail("pickle is truncated: it ends without a STOP opcode");
    op_ = u8();
    switch (op_) {
      case 0x80: {  // PROTO
        uint8_t v = u8();
        if (v > 5) fail("pickle protocol " + std::to_string(v) + " is newer than 5");
        break;
      }
      case 0x95: take(8); break;  // FRAME: the length is advisory
      case '.': {  // STOP
        if (stack_.empty()) fail("STOP with an empty stack");
        return stack_.back();
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0':  // POP
        if (!marks_.empty() && stack_.size() == marks_.back()) pop_mark();
        else pop();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      case 'N': push(make(K::None)); break;
      case 0x88: case 0x89: {  // NEWTRUE / NEWFALSE
        PyObj* o = make(K::Bool);
        o->b = op_ == 0x88;
        push(o);
        break;
      }
      case 'J': push(make_int(static_cast<int32_t>(rd32(take(4))))); break;  // BININT
      case 'K': push(make_int(u8())); break;                                  // BININT1
      case 'M': push(make_int(rd16(take(2)))); break;                         // BININT2
      case 0x8a: {  // LONG1
        uint64_t len = u8();
        push(make_long(take(len), len));
        break;
      }
      case 0x8b: {  // LONG4
        int32_t len = static_cast<int32_t>(rd32(take(4)));
        if (len < 0) fail("LONG4 with a negative length");
        push(make_long(take(static_cast<uint64_t>(len)), static_cast<uint64_t>(len)));
        break;
      }
      case 'I': {  // INT (text)
        std::string s = line();
        if (s == "00" || s == "01") {
          PyObj* o = make(K::Bool);
          o->b = s == "01";
          push(o);
        } else {
          try {
            push(make_int(std::stoll(s)));
          } catch (const std::exception&) {
            push(make(K::BigInt));
          }
        }
        break;
      }
      case 'L': {  // LONG (text)
        std::string s = line();
        if (!s.empty() && s.back() == 'L') s.pop_back();
        try {
          push(make_int(std::stoll(s)));
        } catch (const std::exception&) {
          push(make(K::BigInt));
        }
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        const uint8_t* d = take(8);
        uint64_t v = 0;
        for (int j = 0; j < 8; ++j) v = (v << 8) | d[j];
        PyObj* o = make(K::Float);
        std::memcpy(&o->f, &v, 8);
        push(o);
        break;
      }
      case 'F': {  // FLOAT (text)
        PyObj* o = make(K::Float);
        std::string s = line();
        o->f = std::strtod(s.c_str(), nullptr);
        push(o);
        break;
      }
      case 'X': push(make_str(K::Str, bytes(rd32(take(4))))); break;          // BINUNICODE
      case 0x8c: push(make_str(K::Str, bytes(u8()))); break;                  // SHORT_BINUNICODE
      case 0x8d: push(make_str(K::Str, bytes(rd64(take(8))))); break;         // BINUNICODE8
      case 'T': push(make_str(K::Str, bytes(rd32(take(4))))); break;          // BINSTRING (py2 str)
      case 'U': push(make_str(K::Str, bytes(u8()))); break;                   // SHORT_BINSTRING
      case 'B': push(make_str(K::Bytes, bytes(rd32(take(4))))); break;        // BINBYTES
      case 'C': push(make_str(K::Bytes, bytes(u8()))); break;                 // SHORT_BINBYTES
      case 0x8e: case 0x96: push(make_str(K::Bytes, bytes(rd64(take(8))))); break;  // BINBYTES8, BYTEARRAY8
      case 'S': case 'V': {  // STRING / UNICODE (text): kept raw, quotes stripped
        std::string s = line();
        if (op_ == 'S' && s.size() >= 2 && (s[0] == '\'' || s[0] == '"')) s = s.substr(1, s.size() - 2);
        push(make_str(K::Str, s));
        break;
      }
      case '}': push(make(K::Dict)); break;                                   // EMPTY_DICT
      case ']': push(make(K::List)); break;                                   // EMPTY_LIST
      case ')': push(make(K::Tuple)); break;                                  // EMPTY_TUPLE
      case 0x8f: push(make(K::Set)); break;                                   // EMPTY_SET
      case 't': push(make_seq(K::Tuple, pop_mark())); break;                  // TUPLE
      case 'l': push(make_seq(K::List, pop_mark())); break;                   // LIST
      case 0x91: push(make_seq(K::Set, pop_mark())); break;                   // FROZENSET
      case 'd': {                                                             // DICT
        auto kv = pop_mark();
        PyObj* d = make(K::Dict);
        set_items(d, kv);
        push(d);
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        size_t k = op_ - 0x84u;
        std::vector<PyObj*> items(k);
        for (size_t j = k; j-- > 0;) items[j] = pop();
        push(make_seq(K::Tuple, std::move(items)));
        break;
      }
      case 's': {  // SETITEM
        PyObj* v = pop();
        PyObj* key = pop();
        set_items(top(), {key, v});
        break;
      }
      case 'u': {  // SETITEMS
        auto kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 'a': {  // APPEND
        PyObj* v = pop();
        append(top(), {v});
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append(top(), items);
        break;
      }
      case 0x90: {  // ADDITEMS
        auto items = pop_mark();
        append(top(), items);
        break;
      }
      case 'q': memo_[u8()] = top(); break;                 // BINPUT
      case 'r': memo_[rd32(take(4))] = top(); break;        // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); break;        // MEMOIZE
      case 'h': push(memo_get(u8())); break;                // BINGET
      case 'j': push(memo_get(rd32(take(4)))); break;       // LONG_BINGET
      case 'p': case 'g': {                                 // PUT / GET (text)
        std::string s = line();
        char* endp = nullptr;
        uint64_t idx = std::strtoull(s.c_str(), &endp, 10);
        if (s.empty() || *endp) fail("bad memo index '" + s + "'");
        if (op_ == 'p') memo_[idx] = top();
        else push(memo_get(idx));
        break;
      }
      case 'c': {  // GLOBAL
        PyObj* g = make(K::Global);
        g->s = line();
        g->s2 = line();
        push(g);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyObj* name = pop();
        PyObj* module = pop();
        if (module->k != K::Str || name->k != K::Str) fail("STACK_GLOBAL on non-string operands");
        PyObj* g = make(K::Global);
        g->s = module->s;
        g->s2 = name->s;
        push(g);
        break;
      }
      case 'R': {  // REDUCE
        PyObj* args = pop();
        PyObj* callable = pop();
        push(reduce(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        PyObj* args = pop();
        PyObj* cls = pop();
        if (cls->k == K::Global && cls->s == "collections" && cls->s2 == "OrderedDict") {
          push(make(K::Dict));
        } else {
          PyObj* o = make(K::Object);
          o->s = cls->k == K::Global ? cls->s + "." + cls->s2 : "<unknown>";
          if (args->k == K::Tuple) o->items = args->items;
          push(o);
        }
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();  // kwargs
        pop();  // args
        PyObj* cls = pop();
        PyObj* o = make(K::Object);
        o->s = cls->k == K::Global ? cls->s + "." + cls->s2 : "<unknown>";
        push(o);
        break;
      }
      case 'i': {  // INST (protocol 0): module, name, args after MARK
        std::string module = line(), name = line();
        pop_mark();
        PyObj* o = make(K::Object);
        o->s = module + "." + name;
        push(o);
        break;
      }
      case 'o': {  // OBJ (protocol 1): class and args after MARK
        auto items = pop_mark();
        if (items.empty()) fail("OBJ without a class");
        PyObj* o = make(K::Object);
        o->s = items[0]->k == K::Global ? items[0]->s + "." + items[0]->s2 : "<unknown>";
        push(o);
        break;
      }
      case 'b': pop(); top(); break;  // BUILD: state ignored (OrderedDict _metadata, object __dict__)
      case 'Q': {                     // BINPERSID
        PyObj* pid = pop();
        push(persistent_load_(*this, pid));
        break;
      }
      case 'P': {  // PERSID (text)
        PyObj* pid = make_str(K::Str, line());
        push(persistent_load_(*this, pid));
        break;
      }
      default:
        fail("unsupported pickle opcode " + hex2(op_));
    }
  }
}

PyObj* Unpickler::reduce(PyObj* callable, PyObj* args) {
  const std::string fn = callable->k == K::Global ? callable->s + "." + callable->s2 : "";
  const std::vector<PyObj*> no_args;
  const std::vector<PyObj*>& a = args->k == K::Tuple ? args->items : no_args;
  if (fn == "collections.OrderedDict" || fn == "builtins.dict" || fn == "__builtin__.dict") {
    PyObj* d = make(K::Dict);
    // OrderedDict([(k, v), ...]) form.
    if (!a.empty() && a[0]->k == K::List)
      for (PyObj* kv : a[0]->items)
        if (kv->k == K::Tuple && kv->items.size() == 2) set_items(d, kv->items);
    return d;
  }
  if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor")
    return rebuild_tensor(fn, a, nullptr);
  if (fn == "torch._utils._rebuild_tensor_v3") {
    // (storage, offset, size, stride, requires_grad, hooks, dtype, metadata)
    const StorageDType* dt = nullptr;
    if (a.size() >= 7 && a[6]->k == K::Global && a[6]->s == "torch") dt = by_dtype_name(a[6]->s2);
    if (!dt)
      fail(fn + ": dtype " + (a.size() >= 7 ? describe(a[6]) : std::string("missing")) +
           " is not supported (float32/16/64, bfloat16, int8/16/32/64, uint8, bool)");
    return rebuild_tensor(fn, a, dt);
  }
  if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || a[0]->k != K::Tensor) fail(fn + " without a tensor argument");
    return a[0];
  }
  PyObj* o = make(K::Object);
  o->s = fn.empty() ? "<result of calling " + describe(callable) + ">" : fn;
  return o;
}

PyObj* Unpickler::rebuild_tensor(const std::string& fn, const std::vector<PyObj*>& a, const StorageDType* dtype) {
  auto bad = [&](const std::string& what) { fail(fn + ": " + what); };
  if (a.size() < 4) bad("expected (storage, offset, size, stride, ...), got " + std::to_string(a.size()) + " arguments");
  PyObj* st = a[0];
  if (st->k != K::Storage) bad("first argument is " + describe(st) + ", not a storage");
  if (a[1]->k != K::Int || a[1]->i < 0) bad("storage offset is " + describe(a[1]) + ", not an int >= 0");
  auto ints = [&](PyObj* t, const char* what) {
    if (t->k != K::Tuple) bad(std::string(what) + " is " + describe(t) + ", not a tuple");
    std::vector<int64_t> v;
    for (PyObj* x : t->items) {
      if (x->k != K::Int || x->i < 0) bad(std::string(what) + " holds " + describe(x) + ", not an int >= 0");
      v.push_back(x->i);
    }
    return v;
  };
  PyObj* t = make(K::Tensor);
  t->s = st->s;
  t->offset = a[1]->i;
  t->size = ints(a[2], "size");
  t->stride = ints(a[3], "stride");
  if (t->size.size() != t->stride.size())
    bad("size " + shape_str(t->size) + " and stride " + shape_str(t->stride) + " differ in length");
  // Storage numel in the tensor's dtype (rebuild_v3 reinterprets an untyped storage).
  t->dtype = dtype ? dtype : st->dtype;
  uint64_t storage_bytes = 0;
  if (mul_overflows(static_cast<uint64_t>(st->i), st->dtype->size, &storage_bytes)) bad("storage size overflows");
  const uint64_t numel_here = storage_bytes / t->dtype->size;
  bool empty = false;
  uint64_t last = static_cast<uint64_t>(t->offset);  // highest element index touched
  for (size_t d = 0; d < t->size.size(); ++d) {
    if (t->size[d] == 0) empty = true;
    uint64_t span = 0;
    if (t->size[d] > 0 && mul_overflows(static_cast<uint64_t>(t->size[d] - 1), static_cast<uint64_t>(t->stride[d]), &span))
      bad("size/stride overflow");
    if (last > UINT64_MAX - span) bad("size/stride overflow");
    last += span;
  }
  uint64_t numel = 1;
  for (auto s : t->size)
    if (mul_overflows(numel, static_cast<uint64_t>(s), &numel)) bad("size overflows");
  const bool fits = empty ? static_cast<uint64_t>(t->offset) <= numel_here : last < numel_here;
  if (!fits)
    bad("tensor of size " + shape_str(t->size) + ", stride " + shape_str(t->stride) + ", offset " +
        std::to_string(t->offset) + " extends past its storage '" + st->s + "' of " + std::to_string(numel_here) +
        " elements");
  return t;
}

// ---------------------------------------------------------------- the loader

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path) : path_(path), zip_(map_file(path), path) {}

  std::map<std::string, at::Tensor> load(const std::string& key);

 private:
  [[noreturn]] void fail(const std::string& what) const { throw CheckpointError(zip_.where() + ": " + what); }
  PyObj* persistent_load(Unpickler& u, PyObj* pid);
  at::Tensor storage_base(const std::string& key, const StorageDType* dt);
  at::Tensor materialize(PyObj* t);

  std::string path_;
  ZipArchive zip_;
  std::string prefix_;  // "<archive>/"
  std::map<std::pair<std::string, at::ScalarType>, at::Tensor> bases_;
};

PyObj* CheckpointReader::persistent_load(Unpickler& u, PyObj* pid) {
  // ('storage', torch.<X>Storage, key, location, numel)
  if (pid->k != K::Tuple || pid->items.size() < 5 || pid->items[0]->k != K::Str || pid->items[0]->s != "storage")
    u.fail("persistent id is " + describe(pid) + ", not a ('storage', type, key, location, numel) tuple");
  PyObj* type = pid->items[1];
  PyObj* key = pid->items[2];
  PyObj* numel = pid->items[4];
  const StorageDType* dt = nullptr;
  if (type->k == K::Global && type->s == "torch")
    dt = type->s2 == "UntypedStorage" ? by_storage_name("ByteStorage") : by_storage_name(type->s2);
  if (!dt)
    u.fail("storage type " + describe(type) +
           " is not supported (Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte, Bool storages)");
  if (key->k != K::Str) u.fail("storage key is " + describe(key) + ", not a string");
  if (numel->k != K::Int || numel->i < 0) u.fail("storage numel is " + describe(numel) + ", not an int >= 0");
  const std::string entry = prefix_ + "data/" + key->s;
  const ZipEntry* e = zip_.find(entry);
  if (!e) u.fail("storage '" + key->s + "' is referenced but the archive has no entry '" + entry + "'");
  uint64_t need = 0;
  if (mul_overflows(static_cast<uint64_t>(numel->i), dt->size, &need) || e->size < need)
    u.fail("storage '" + key->s + "' should hold " + std::to_string(numel->i) + " " + dt->dtype + " elements but its entry has " +
           std::to_string(e->size) + " bytes");
  PyObj* s = u.make(K::Storage);
  s->s = key->s;
  s->dtype = dt;
  s->i = numel->i;
  return s;
}

at::Tensor CheckpointReader::storage_base(const std::string& key, const StorageDType* dt) {
  auto it = bases_.find({key, dt->scalar});
  if (it != bases_.end()) return it->second;
  const ZipEntry& e = *zip_.find(prefix_ + "data/" + key);
  const uint8_t* p = zip_.data(e);  // CRC-checked
  const int64_t numel = static_cast<int64_t>(e.size / dt->size);
  auto opts = at::TensorOptions().dtype(dt->scalar);
  if (dt->scalar == at::kBool)
    for (uint64_t j = 0; j < e.size; ++j)
      if (p[j] > 1) fail("bool storage '" + key + "' holds byte " + std::to_string(p[j]) + " at " + std::to_string(j));
  at::Tensor base;
  if (numel == 0) {
    base = at::empty({0}, opts);
  } else if (!zip_.mapping()->read_only && reinterpret_cast<uintptr_t>(p) % dt->size == 0) {
    auto keep = zip_.mapping();
    base = at::from_blob(const_cast<uint8_t*>(p), {numel}, [keep](void*) {}, opts);
  } else {
    base = at::empty({numel}, opts);
    std::memcpy(base.data_ptr(), p, static_cast<size_t>(numel) * dt->size);
  }
  bases_.emplace(std::make_pair(key, dt->scalar), base);
  return base;
}

at::Tensor CheckpointReader::materialize(PyObj* t) {
  at::Tensor base = storage_base(t->s, t->dtype);
  return base.as_strided(t->size, t->stride, t->offset);
}

std::map<std::string, at::Tensor> CheckpointReader::load(const std::string& key) {
  // The archive folder: the one holding data.pkl (torch takes the first entry's folder).
  const auto& entries = zip_.entries();
  if (entries.empty()) fail("zip archive has no entries");
  const std::string& first = entries.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos) fail("zip entry '" + first + "' is not inside an archive folder; not a torch.save file");
  prefix_ = first.substr(0, slash + 1);
  for (const auto& e : entries)
    if (e.name == prefix_ + "constants.pkl" || e.name.compare(0, prefix_.size() + 5, prefix_ + "code/") == 0)
      fail("a TorchScript archive (torch.jit.save), not a torch.save checkpoint; save its state_dict() with torch.save");
  const ZipEntry* pkl = zip_.find(prefix_ + "data.pkl");
  if (!pkl) fail("no '" + prefix_ + "data.pkl' entry; entries are " + join_names(zip_.names()));
  for (const char* bo : {"byteorder", ".data/byteorder"}) {
    if (const ZipEntry* e = zip_.find(prefix_ + bo)) {
      std::string order(reinterpret_cast<const char*>(zip_.data(*e)), e->size);
      if (order != "little") fail("byte order '" + order + "' is not supported (only little-endian checkpoints)");
    }
  }

  const uint8_t* data = zip_.data(*pkl);
  Unpickler u(data, pkl->size, zip_.where() + ": " + pkl->name,
              [this](Unpickler& up, PyObj* pid) { return persistent_load(up, pid); });
  PyObj* root = u.run();

  auto str_keys = [](PyObj* d) {
    std::vector<std::string> ks;
    for (PyObj* k : d->items) ks.push_back(k->k == K::Str ? k->s : "<" + describe(k) + ">");
    return ks;
  };
  auto lookup = [](PyObj* d, const std::string& k) -> PyObj* {
    PyObj* found = nullptr;  // last one wins, like a dict
    for (size_t j = 0; j < d->items.size(); ++j)
      if (d->items[j]->k == K::Str && d->items[j]->s == k) found = d->values[j];
    return found;
  };
  if (root->k != K::Dict)
    fail("the pickled object is " + describe(root) +
         ", not a dict; a whole model saved with torch.save(model) is not supported: save model.state_dict()");

  PyObj* sd = nullptr;
  std::string chosen;
  if (!key.empty()) {
    sd = lookup(root, key);
    if (!sd) fail("no entry '" + key + "' at the top level; keys found: " + join_names(str_keys(root)));
    if (sd->k != K::Dict) fail("entry '" + key + "' is " + describe(sd) + ", not a state dict");
    chosen = "entry '" + key + "'";
  } else {
    bool all_tensors = true;
    for (PyObj* v : root->values) all_tensors = all_tensors && v->k == K::Tensor;
    if (all_tensors) {
      sd = root;
      chosen = "the top-level dict";
    } else {
      for (const char* k : {"model", "state_dict"}) {
        PyObj* v = lookup(root, k);
        if (v && v->k == K::Dict) {
          sd = v;
          chosen = std::string("entry '") + k + "'";
          break;
        }
      }
      if (!sd)
        fail("no state dict found: the top-level dict is not all tensors and has no 'model' or 'state_dict' dict; "
             "keys found: " + join_names(str_keys(root)) + " (pass the key that holds it)");
    }
  }

  std::map<std::string, at::Tensor> out;
  for (size_t j = 0; j < sd->items.size(); ++j) {
    PyObj* k = sd->items[j];
    PyObj* v = sd->values[j];
    if (k->k != K::Str) fail("a state dict key (in " + chosen + ") is " + describe(k) + ", not a string");
    if (v->k != K::Tensor)
      fail("state dict entry '" + k->s + "' (in " + chosen + ") is " + describe(v) + ", not a tensor");
    out[k->s] = materialize(v);
  }
  return out;
}

// ---------------------------------------------------------------- writer

class FileWriter {
 public:
  explicit FileWriter(const std::string& path) : path_(path) {
    std::string dir = ".";
    auto slash = path.rfind('/');
    if (slash != std::string::npos) dir = slash == 0 ? "/" : path.substr(0, slash);
    std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    tmp_ = (dir == "/" ? "" : dir) + "/." + base + ".tmp.XXXXXX";
    fd_ = ::mkstemp(tmp_.data());
    if (fd_ < 0) throw CheckpointError("cannot create a temporary file beside '" + path + "': " + std::strerror(errno));
  }
  ~FileWriter() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  void write(const void* data, uint64_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, std::min<uint64_t>(n, 1u << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw CheckpointError("cannot write '" + path_ + "': " + std::strerror(errno));
      p += w;
      n -= static_cast<uint64_t>(w);
      off_ += static_cast<uint64_t>(w);
    }
  }
  void pwrite_at(uint64_t at, const void* data, size_t n) {
    if (::pwrite(fd_, data, n, static_cast<off_t>(at)) != static_cast<ssize_t>(n))
      throw CheckpointError("cannot write '" + path_ + "': " + std::strerror(errno));
  }
  uint64_t offset() const { return off_; }
  void commit() {
    if (::fchmod(fd_, 0644) != 0 || ::fsync(fd_) != 0)
      throw CheckpointError("cannot flush '" + path_ + "': " + std::strerror(errno));
    ::close(fd_);
    fd_ = -1;
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      int err = errno;
      ::unlink(tmp_.c_str());
      throw CheckpointError("cannot rename the temporary file to '" + path_ + "': " + std::strerror(err));
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t off_ = 0;
};

struct Bytes {
  std::string b;
  void u8(uint8_t v) { b.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { u8(v & 0xff); u8(v >> 8); }
  void u32(uint32_t v) { u16(v & 0xffff); u16(v >> 16); }
  void u64(uint64_t v) { u32(static_cast<uint32_t>(v)); u32(static_cast<uint32_t>(v >> 32)); }
  void str(const std::string& s) { b += s; }
};

class ZipWriter {
 public:
  ZipWriter(FileWriter& f, bool force_zip64) : f_(f), force64_(force_zip64) {}

  // One stored entry; the data is 64-byte aligned in the file, like torch.save.
  void add(const std::string& name, const uint8_t* data, uint64_t size) {
    const uint64_t local = f_.offset();
    const bool z64 = force64_ || size >= 0xffffffffu;
    Bytes h;
    h.u32(kLocalSig);
    h.u16(z64 ? 45 : 20);  // version needed
    h.u16(0);              // flags
    h.u16(0);              // stored
    h.u16(0);              // time
    h.u16(0x21);           // date: 1980-01-01
    h.u32(0);              // CRC, filled in after the data
    h.u32(z64 ? 0xffffffffu : static_cast<uint32_t>(size));
    h.u32(z64 ? 0xffffffffu : static_cast<uint32_t>(size));
    h.u16(static_cast<uint16_t>(name.size()));
    Bytes extra;
    if (z64) {
      extra.u16(1);
      extra.u16(16);
      extra.u64(size);
      extra.u64(size);
    }
    const uint64_t unpadded = local + 30 + name.size() + extra.b.size();
    uint64_t pad = (64 - unpadded % 64) % 64;
    if (pad != 0 && pad < 4) pad += 64;
    if (pad) {
      extra.u16(0x4246);  // "FB": padding, as PyTorch writes it
      extra.u16(static_cast<uint16_t>(pad - 4));
      extra.str(std::string(pad - 4, 'Z'));
    }
    h.u16(static_cast<uint16_t>(extra.b.size()));
    h.str(name);
    h.str(extra.b);
    f_.write(h.b.data(), h.b.size());
    uint32_t crc = 0;
    constexpr uint64_t kChunk = 64u << 20;
    for (uint64_t o = 0; o < size; o += kChunk) {
      const uint64_t len = std::min(kChunk, size - o);
      crc = crc32_update(crc, data + o, len);
      f_.write(data + o, len);
    }
    Bytes c;
    c.u32(crc);
    f_.pwrite_at(local + 14, c.b.data(), 4);
    entries_.push_back({name, local, size, crc});
  }

  void finish() {
    const uint64_t cd_off = f_.offset();
    bool need64 = force64_ || entries_.size() >= 0xffff;
    for (const auto& e : entries_) {
      const bool big = force64_ || e.size >= 0xffffffffu;
      const bool far = force64_ || e.local >= 0xffffffffu;
      Bytes x;
      if (big || far) {
        x.u16(1);
        x.u16(static_cast<uint16_t>((big ? 16 : 0) + (far ? 8 : 0)));
        if (big) {
          x.u64(e.size);
          x.u64(e.size);
        }
        if (far) x.u64(e.local);
        need64 = true;
      }
      Bytes h;
      h.u32(kCentralSig);
      h.u16(45);  // made by (MS-DOS, 4.5)
      h.u16(big || far ? 45 : 20);
      h.u16(0);
      h.u16(0);
      h.u16(0);
      h.u16(0x21);
      h.u32(e.crc);
      h.u32(big ? 0xffffffffu : static_cast<uint32_t>(e.size));
      h.u32(big ? 0xffffffffu : static_cast<uint32_t>(e.size));
      h.u16(static_cast<uint16_t>(e.name.size()));
      h.u16(static_cast<uint16_t>(x.b.size()));
      h.u16(0);  // comment
      h.u16(0);  // disk
      h.u16(0);  // internal attributes
      h.u32(0);  // external attributes
      h.u32(far ? 0xffffffffu : static_cast<uint32_t>(e.local));
      h.str(e.name);
      h.str(x.b);
      f_.write(h.b.data(), h.b.size());
    }
    const uint64_t cd_size = f_.offset() - cd_off;
    need64 = need64 || cd_off >= 0xffffffffu || cd_size >= 0xffffffffu;
    Bytes t;
    if (need64) {
      const uint64_t z = f_.offset();
      t.u32(kZip64EocdSig);
      t.u64(44);
      t.u16(45);
      t.u16(45);
      t.u32(0);
      t.u32(0);
      t.u64(entries_.size());
      t.u64(entries_.size());
      t.u64(cd_size);
      t.u64(cd_off);
      t.u32(kZip64LocatorSig);
      t.u32(0);
      t.u64(z);
      t.u32(1);
    }
    t.u32(kEocdSig);
    t.u16(0);
    t.u16(0);
    const uint16_t n16 = need64 ? 0xffff : static_cast<uint16_t>(entries_.size());
    t.u16(n16);
    t.u16(n16);
    t.u32(need64 ? 0xffffffffu : static_cast<uint32_t>(cd_size));
    t.u32(need64 ? 0xffffffffu : static_cast<uint32_t>(cd_off));
    t.u16(0);
    f_.write(t.b.data(), t.b.size());
  }

 private:
  struct Entry {
    std::string name;
    uint64_t local, size;
    uint32_t crc;
  };
  FileWriter& f_;
  bool force64_;
  std::vector<Entry> entries_;
};

// Protocol-2 pickle of OrderedDict{name: _rebuild_tensor_v2(...)}.
class PickleWriter {
 public:
  void proto() { b_.u8(0x80); b_.u8(2); }
  void global(const std::string& module, const std::string& name) {
    b_.u8('c');
    b_.str(module + "\n" + name + "\n");
  }
  void str(const std::string& s) {
    b_.u8('X');
    b_.u32(static_cast<uint32_t>(s.size()));
    b_.str(s);
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      b_.u8('K');
      b_.u8(static_cast<uint8_t>(v));
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      b_.u8('J');
      b_.u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      b_.u8(0x8a);  // LONG1, 8 bytes two's complement
      b_.u8(8);
      b_.u64(static_cast<uint64_t>(v));
    }
  }
  void ints(at::IntArrayRef v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  void op(uint8_t o) { b_.u8(o); }
  const std::string& bytes() const { return b_.b; }

 private:
  Bytes b_;
};

}  // namespace

std::map<std::string, at::Tensor> load_torch_checkpoint(const std::string& path, const std::string& key) {
  CheckpointReader r(path);
  return r.load(key);
}

void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict) {
  save_torch_checkpoint(path, state_dict, TorchSaveOptions{});
}

void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict,
                           const TorchSaveOptions& options) {
  if (options.archive_name.empty() || options.archive_name.find('/') != std::string::npos)
    throw InputError("save_torch_checkpoint: archive name '" + options.archive_name + "' must be a plain folder name");
  // Group tensors by (storage, dtype): each group is written once, as the
  // span of the storage its tensors touch.
  struct Item {
    std::string name;
    at::Tensor t;
    const StorageDType* dt;
    size_t group;
    int64_t offset;  // in the written storage
  };
  struct Group {
    at::Tensor any;  // keeps the storage alive
    const StorageDType* dt;
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;  // element span [lo, hi)
  };
  std::vector<Item> items;
  std::vector<Group> groups;
  std::map<std::pair<const void*, at::ScalarType>, size_t> group_of;
  std::set<std::string> seen;
  for (const auto& [name, t0] : state_dict) {
    if (!seen.insert(name).second) throw InputError("save_torch_checkpoint: tensor name '" + name + "' appears twice");
    if (!t0.defined()) throw InputError("save_torch_checkpoint: tensor '" + name + "' is undefined");
    if (t0.layout() != at::kStrided || t0.is_quantized())
      throw InputError("save_torch_checkpoint: tensor '" + name + "' is not a dense strided tensor");
    const StorageDType* dt = by_scalar(t0.scalar_type());
    if (!dt)
      throw InputError("save_torch_checkpoint: tensor '" + name + "' has dtype " + std::string(c10::toString(t0.scalar_type())) +
                       ", which this writer does not support");
    at::Tensor t = t0.detach();
    if (!t.device().is_cpu()) t = t.to(at::kCPU);
    if (t.is_conj() || t.is_neg()) t = t.resolve_conj().resolve_neg();
    Item it{name, t, dt, 0, 0};
    if (t.numel() == 0) {
      it.group = groups.size();
      groups.push_back({t, dt, 0, 0});
      items.push_back(it);
      continue;
    }
    int64_t last = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    auto k = std::make_pair(static_cast<const void*>(t.storage().unsafeGetStorageImpl()), t.scalar_type());
    auto g = group_of.find(k);
    if (g == group_of.end()) {
      g = group_of.emplace(k, groups.size()).first;
      groups.push_back({t, dt});
    }
    it.group = g->second;
    Group& gr = groups[it.group];
    gr.lo = std::min(gr.lo, t.storage_offset());
    gr.hi = std::max(gr.hi, last + 1);
    items.push_back(it);
  }
  for (auto& it : items) {
    const Group& g = groups[it.group];
    it.offset = it.t.numel() == 0 ? 0 : it.t.storage_offset() - g.lo;
  }

  PickleWriter pk;
  pk.proto();
  pk.global("collections", "OrderedDict");
  pk.op(')');
  pk.op('R');
  if (!items.empty()) {
    pk.op('(');
    for (const auto& it : items) {
      const Group& g = groups[it.group];
      pk.str(it.name);
      pk.global("torch._utils", "_rebuild_tensor_v2");
      pk.op('(');
      // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
      pk.op('(');
      pk.str("storage");
      pk.global("torch", g.dt->storage);
      pk.str(std::to_string(it.group));
      pk.str("cpu");
      pk.integer(it.t.numel() == 0 ? 0 : g.hi - g.lo);
      pk.op('t');
      pk.op('Q');
      pk.integer(it.offset);
      pk.ints(it.t.sizes());
      pk.ints(it.t.strides());
      pk.op(0x89);  // requires_grad=False
      pk.global("collections", "OrderedDict");
      pk.op(')');
      pk.op('R');
      pk.op('t');
      pk.op('R');
    }
    pk.op('u');
  }
  pk.op('.');

  FileWriter f(path);
  ZipWriter zip(f, options.force_zip64);
  const std::string pre = options.archive_name + "/";
  zip.add(pre + "data.pkl", reinterpret_cast<const uint8_t*>(pk.bytes().data()), pk.bytes().size());
  const std::string order = "little";
  zip.add(pre + "byteorder", reinterpret_cast<const uint8_t*>(order.data()), order.size());
  for (size_t gi = 0; gi < groups.size(); ++gi) {
    const Group& g = groups[gi];
    const uint64_t n = g.hi > g.lo ? static_cast<uint64_t>(g.hi - g.lo) * g.dt->size : 0;
    const uint8_t* base = n ? static_cast<const uint8_t*>(g.any.storage().data()) + static_cast<uint64_t>(g.lo) * g.dt->size : nullptr;
    zip.add(pre + "data/" + std::to_string(gi), base, n);
  }
  const std::string version = "3\n";
  zip.add(pre + "version", reinterpret_cast<const uint8_t*>(version.data()), version.size());
  zip.finish();
  f.commit();
}

}  // namespace blip2::io
