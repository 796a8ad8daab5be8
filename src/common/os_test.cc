// WriteFileAtomic's durability: the new contents are fsynced before the
// rename that publishes them, and the directory after it (issue 17: the
// fence's pg_hba.conf was renamed into place without either). fsync and
// rename are interposed in this binary to record the calls in order.
#include "common/os.h"

#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <string>
#include <vector>

namespace {

bool g_recording = false;
std::vector<std::string> g_calls;  // "fsync <path>" and "rename <from> <to>"

std::string PathOfFd(int fd) {
  char buf[PATH_MAX];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  ssize_t n = readlink(link.c_str(), buf, sizeof buf - 1);
  return n < 0 ? "?" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

extern "C" int fsync(int fd) {
  using Fn = int (*)(int);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "fsync"));
  if (g_recording) g_calls.push_back("fsync " + PathOfFd(fd));
  return real(fd);
}

extern "C" int rename(const char* from, const char* to) noexcept {
  using Fn = int (*)(const char*, const char*);
  static Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "rename"));
  if (g_recording) g_calls.push_back(std::string("rename ") + from + " " + to);
  return real(from, to);
}

namespace pgshift {
namespace {

TEST(WriteFileAtomic, FsyncsTheFileBeforeTheRenameAndTheDirectoryAfter) {
  auto dir = MakeTempDir("pgshift-os");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  const std::string path = *dir + "/pg_hba.conf";
  const std::string tmp = path + ".pgshift-tmp";
  ASSERT_TRUE(WriteFileAtomic(path, "old\n").ok());
  ASSERT_EQ(chmod(path.c_str(), 0640), 0);

  g_calls.clear();
  g_recording = true;
  Status st = WriteFileAtomic(path, "local all all reject\n");
  g_recording = false;
  ASSERT_TRUE(st.ok()) << st.ToString();
  const std::vector<std::string> want = {"fsync " + tmp, "rename " + tmp + " " + path,
                                         "fsync " + *dir};
  EXPECT_EQ(g_calls, want);

  auto text = ReadFile(path);
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(*text, "local all all reject\n");
  struct stat st_after {};
  ASSERT_EQ(stat(path.c_str(), &st_after), 0);
  EXPECT_EQ(st_after.st_mode & 07777, 0640u) << "the existing file's mode is kept";
  EXPECT_FALSE(PathExists(tmp));
  EXPECT_TRUE(RemoveTree(*dir).ok());
}

TEST(WriteFileAtomic, FailureLeavesNoTemporaryFileAndNamesThePath) {
  auto dir = MakeTempDir("pgshift-os");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  // The target is a non-empty directory: the rename fails after the write.
  const std::string path = *dir + "/taken";
  ASSERT_TRUE(MakeDirOwnedBy(path + "/inside", "", 0755).ok());
  Status st = WriteFileAtomic(path, "x");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("rename"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(path), std::string::npos) << st.message();
  EXPECT_FALSE(PathExists(path + ".pgshift-tmp"));
  EXPECT_TRUE(RemoveTree(*dir).ok());
}

}  // namespace
}  // namespace pgshift
