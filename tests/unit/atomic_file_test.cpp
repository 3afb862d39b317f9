// Crash-safe writes: a failing disk or a throwing writer leaves the target as
// it was and no temporary file behind.
#include "blip2/util/atomic_file.h"

#include <filesystem>
#include <fstream>
#include <ostream>
#include <sstream>

#include "blip2/util/error.h"
#include "test_util.h"

namespace blip2 {
namespace {

using test::TempDir;

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

int entries(const std::string& dir) {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

// Turns the injected disk-full fault off when a test ends, pass or fail.
struct FaultGuard {
  ~FaultGuard() { fault_injection::fail_writes_after(-1); }
};

TEST(AtomicFileTest, DiskFullMidWriteKeepsTheOldFileAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("data.bin");
  write_atomic(path, "old contents");
  FaultGuard guard;
  fault_injection::fail_writes_after(5);
  EXPECT_THROW_WITH(write_atomic(path, std::string(100, 'x')), Error, "No space left on device");
  fault_injection::fail_writes_after(-1);
  EXPECT_EQ(read(path), "old contents");
  EXPECT_EQ(entries(dir.path()), 1);
}

TEST(AtomicFileTest, AStreamWriterThatFailsMidwayIsNeverToldAndTheErrorComesAfter) {
  // libtorch's archive writer aborts when its stream fails; the stream must
  // stay good through the whole write and the error surface afterwards.
  TempDir dir;
  const std::string path = dir.file("optimizer.pt");
  FaultGuard guard;
  fault_injection::fail_writes_after(3 << 20);
  bool stream_stayed_good = true;
  EXPECT_THROW_WITH(write_atomic_stream(path,
                                        [&](std::ostream& out) {
                                          const std::string block(1 << 16, 'z');
                                          for (int i = 0; i < 100; ++i) {
                                            out << block;
                                            stream_stayed_good = stream_stayed_good && out.good();
                                          }
                                        }),
                    Error, "No space left on device");
  EXPECT_TRUE(stream_stayed_good);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(entries(dir.path()), 0);
}

TEST(AtomicFileTest, AThrowingWriterLeavesTheTargetAndNoTemporary) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  write_atomic(path, "{\"step\": 3}");
  EXPECT_THROW_WITH(write_atomic_stream(path,
                                        [](std::ostream& out) {
                                          out << std::string(5000, 'y');
                                          throw Error("serialiser failed");
                                        }),
                    Error, "serialiser failed");
  EXPECT_EQ(read(path), "{\"step\": 3}");
  EXPECT_EQ(entries(dir.path()), 1);
}

TEST(AtomicFileTest, StreamAndCopyWriteTheWholeContents) {
  TempDir dir;
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + 1);
  write_atomic_stream(dir.file("a"), [&](std::ostream& out) { out.write(big.data(), static_cast<std::streamsize>(big.size())); });
  EXPECT_EQ(read(dir.file("a")), big);
  copy_atomic(dir.file("a"), dir.file("b"));
  EXPECT_EQ(read(dir.file("b")), big);
  EXPECT_THROW_WITH(copy_atomic(dir.file("missing"), dir.file("c")), Error, "cannot read");
  EXPECT_FALSE(std::filesystem::exists(dir.file("c")));
}

}  // namespace
}  // namespace blip2
