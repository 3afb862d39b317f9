#include "blip2/util/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <ostream>
#include <sstream>
#include <streambuf>
#include <vector>

#include "blip2/util/error.h"

namespace blip2 {

namespace {

std::atomic<int64_t> g_fail_after{-1};  // bytes left before injected failures; -1: off
std::atomic<int> g_fail_errno{ENOSPC};

// How many of `n` bytes the injected fault lets through (n when off).
uint64_t allowed_by_fault(uint64_t n) {
  int64_t left = g_fail_after.load();
  while (left >= 0) {
    const int64_t take = static_cast<int64_t>(std::min<uint64_t>(n, static_cast<uint64_t>(left)));
    if (g_fail_after.compare_exchange_weak(left, left - take)) return static_cast<uint64_t>(take);
  }
  return n;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace

AtomicFile::AtomicFile(const std::string& path) : path_(path) {
  const std::string dir = parent_of(path);
  const auto slash = path.rfind('/');
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  tmp_ = (dir == "/" ? "" : dir) + "/." + base + ".tmp.XXXXXX";
  fd_ = ::mkstemp(tmp_.data());
  if (fd_ < 0)
    throw Error("cannot create '" + path + "': " + std::strerror(errno) +
                "; check that the directory exists and is writable");
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void AtomicFile::write(const void* data, uint64_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const uint64_t chunk = allowed_by_fault(std::min<uint64_t>(n, 1u << 30));
    if (chunk == 0) {
      errno = g_fail_errno.load();
      throw Error("writing '" + path_ + "' failed: " + std::strerror(errno) + " (disk full?)");
    }
    const ssize_t w = ::write(fd_, p, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error("writing '" + path_ + "' failed: " + std::strerror(errno) + " (disk full?)");
    p += w;
    n -= static_cast<uint64_t>(w);
    offset_ += static_cast<uint64_t>(w);
  }
}

void AtomicFile::pwrite_at(uint64_t at, const void* data, size_t n) {
  if (::pwrite(fd_, data, n, static_cast<off_t>(at)) != static_cast<ssize_t>(n))
    throw Error("writing '" + path_ + "' failed: " + std::strerror(errno));
}

void AtomicFile::commit() {
  if (::fchmod(fd_, 0644) != 0 || ::fsync(fd_) != 0)
    throw Error("cannot flush '" + path_ + "': " + std::strerror(errno) + " (disk full?)");
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp_.c_str());
    throw Error("cannot rename the temporary file to '" + path_ + "': " + std::strerror(err));
  }
  fsync_path(parent_of(path_));
}

void write_atomic(const std::string& path, std::string_view data) {
  AtomicFile f(path);
  f.write(data);
  f.commit();
}

namespace {

// A buffered streambuf over an AtomicFile that never reports failure: the
// first write error is kept and later bytes are dropped.
class StickyErrorBuf : public std::streambuf {
 public:
  explicit StickyErrorBuf(AtomicFile& f) : file_(f), buf_(1 << 20) { setp(buf_.data(), buf_.data() + buf_.size()); }
  // The first write error's message, empty if none.
  const std::string& error() { flush(); return error_; }

 protected:
  int_type overflow(int_type c) override {
    flush();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  int sync() override {
    flush();
    return 0;
  }

 private:
  void flush() {
    const auto n = static_cast<uint64_t>(pptr() - pbase());
    if (n > 0 && error_.empty()) {
      try {
        file_.write(pbase(), n);
      } catch (const std::exception& e) {
        error_ = e.what();
      }
    }
    setp(buf_.data(), buf_.data() + buf_.size());
  }
  AtomicFile& file_;
  std::vector<char> buf_;
  std::string error_;
};

}  // namespace

void write_atomic_stream(const std::string& path, const std::function<void(std::ostream&)>& fill) {
  AtomicFile f(path);
  StickyErrorBuf buf(f);
  std::ostream out(&buf);
  fill(out);
  out.flush();
  if (!buf.error().empty()) throw Error(buf.error());
  f.commit();
}

void copy_atomic(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  if (!in) throw Error("cannot read '" + from + "': " + std::strerror(errno));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error("cannot read '" + from + "': " + std::strerror(errno));
  write_atomic(to, s.str());
}

namespace fault_injection {
void fail_writes_after(int64_t bytes, int err) {
  g_fail_errno = err;
  g_fail_after = bytes < 0 ? -1 : bytes;
}
}  // namespace fault_injection

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace blip2
