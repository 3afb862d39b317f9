// Internal to torch_checkpoint.cpp (header-only, one includer): the zip
// container of torch.save files: the file mapped copy-on-write, the zip
// reader (ZIP64 included, CRC-32 checked) and writer (stored, 64-byte
// aligned entries like torch's), and the little helpers they share.
#pragma once

#include "blip2/io/mapped_file.h"

#include <ATen/ATen.h>

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
#include "blip2/util/atomic_file.h"
#include "blip2/util/error.h"

namespace blip2::io::detail {

// ---------------------------------------------------------------- helpers

inline std::string hex2(unsigned v) {
  char b[8];
  std::snprintf(b, sizeof b, "0x%02x", v & 0xffu);
  return b;
}

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

inline std::string join_names(const std::vector<std::string>& names, size_t max = 12) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < max; ++i) s += (i ? ", " : "") + quoted(names[i]);
  if (names.size() > max) s += ", ... (" + std::to_string(names.size()) + " in all)";
  return "[" + s + "]";
}

inline uint16_t rd16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
inline uint32_t rd32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
inline uint64_t rd64(const uint8_t* p) { return static_cast<uint64_t>(rd32(p)) | (static_cast<uint64_t>(rd32(p + 4)) << 32); }

inline bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
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

inline uint32_t crc32_update(uint32_t crc, const uint8_t* p, uint64_t n) {
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

// ---------------------------------------------------------------- the file, mapped copy-on-write

using Mapping = MappedFile;

inline std::shared_ptr<Mapping> map_file(const std::string& path) {
  return MappedFile::open(path, "PyTorch checkpoint '" + path + "'");
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

// ---------------------------------------------------------------- writer

// The archive is written through AtomicFile (util/atomic_file.h).
using FileWriter = AtomicFile;

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

}  // namespace blip2::io::detail
