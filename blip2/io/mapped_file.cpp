#include "blip2/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "blip2/util/error.h"

namespace blip2::io {

MappedFile::~MappedFile() {
  if (data) ::munmap(data, size);
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path, const std::string& where) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw CheckpointError("cannot open " + where + ": " + std::strerror(errno) +
                          "; check the path and that the file is readable");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw CheckpointError(where + " is not a regular file");
  }
  auto m = std::make_shared<MappedFile>();
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

}  // namespace blip2::io
