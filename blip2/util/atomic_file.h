// Crash-safe file writes: the bytes go to a temporary file beside the target,
// which is fsync'ed and renamed over it on commit(), so a reader (or a run
// resumed after a crash) sees the old file or the new one, never half of one.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

namespace blip2 {

class AtomicFile {
 public:
  // Creates the temporary file beside `path`; Error naming the path if it cannot.
  explicit AtomicFile(const std::string& path);
  ~AtomicFile();  // an uncommitted temporary file is removed
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, uint64_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Overwrites bytes already written (headers whose sizes are known last).
  void pwrite_at(uint64_t offset, const void* data, size_t n);
  uint64_t offset() const { return offset_; }  // bytes written so far
  // fsync, rename over the target, fsync the directory. Error on failure
  // (the target is then untouched and the temporary file removed).
  void commit();
  const std::string& path() const { return path_; }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t offset_ = 0;
};

// The whole of `data` to `path`, atomically.
void write_atomic(const std::string& path, std::string_view data);

// What `fill` writes into the stream goes to `path`, atomically. The stream
// itself never fails: after a write error (ENOSPC, EIO) the rest is discarded
// and the error is thrown once `fill` returns, so writers that cannot survive a
// failing stream (libtorch's archive writer aborts the process) finish
// normally. If `fill` throws, the temporary file is removed and the exception
// propagates; the target is untouched in both cases.
void write_atomic_stream(const std::string& path, const std::function<void(std::ostream&)>& fill);

// The whole of file `from` to `to`, atomically (for small files: read whole).
void copy_atomic(const std::string& from, const std::string& to);

// fsync of a file or directory (best effort: errors are ignored).
void fsync_path(const std::string& path);

namespace fault_injection {
// Test seam for the disk-full paths: once `bytes` more bytes have gone through
// AtomicFile writes in this process, every later write fails with `err` as a
// full disk would. A negative `bytes` turns it off (the default).
void fail_writes_after(int64_t bytes, int err = ENOSPC);
}  // namespace fault_injection

}  // namespace blip2
