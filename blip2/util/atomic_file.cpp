#include "blip2/util/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "blip2/util/error.h"

namespace blip2 {

namespace {
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
    const ssize_t w = ::write(fd_, p, std::min<uint64_t>(n, 1u << 30));
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

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace blip2
