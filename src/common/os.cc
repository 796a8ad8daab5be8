#include "common/os.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <utility>

namespace fs = std::filesystem;

namespace pgshift {
namespace {

// Closes the descriptor it holds.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace

Result<OsUser> LookupOsUser(const std::string& name) {
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) {
    return NotFound("OS user '" + name +
                    "' does not exist; create it (e.g. the Debian postgresql package creates "
                    "'postgres') or choose another with --os-user");
  }
  OsUser u;
  u.name = name;
  u.uid = pw.pw_uid;
  u.gid = pw.pw_gid;
  u.home = pw.pw_dir ? pw.pw_dir : "/";
  int ngroups = 64;
  std::vector<gid_t> groups(ngroups);
  if (getgrouplist(name.c_str(), u.gid, groups.data(), &ngroups) < 0) {
    groups.resize(ngroups);
    getgrouplist(name.c_str(), u.gid, groups.data(), &ngroups);
  }
  groups.resize(ngroups);
  u.groups = groups;
  return u;
}

Result<std::string> OwnerName(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return NotFound("cannot stat " + path + ": " + strerror(errno));
  struct passwd pw {};
  struct passwd* found = nullptr;
  std::vector<char> buf(16384);
  if (getpwuid_r(st.st_uid, &pw, buf.data(), buf.size(), &found) != 0 || !found) {
    return NotFound(path + " is owned by uid " + std::to_string(st.st_uid) +
                    ", which has no user name");
  }
  return std::string(pw.pw_name);
}

Result<int> ParentPid(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return NotFound("no process " + std::to_string(pid));
  // pid (comm) state ppid ...: comm may hold spaces and parentheses.
  const size_t close = line.rfind(')');
  int ppid = 0;
  char state = 0;
  if (close == std::string::npos ||
      std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) != 2) {
    return Internal("unreadable /proc/" + std::to_string(pid) + "/stat");
  }
  return ppid;
}

bool RunningAsRoot() { return geteuid() == 0; }

Status MakeDirOwnedBy(const std::string& path, const std::string& owner, int mode) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) return Internal("cannot create directory " + path + ": " + ec.message());
  if (chmod(path.c_str(), mode) != 0) {
    return Internal("cannot chmod " + path + ": " + strerror(errno));
  }
  if (!owner.empty() && RunningAsRoot()) {
    PGSHIFT_ASSIGN_OR_RETURN(OsUser u, LookupOsUser(owner));
    if (chown(path.c_str(), u.uid, u.gid) != 0) {
      return Internal("cannot chown " + path + ": " + strerror(errno));
    }
  }
  return Status::OK();
}

Status ChownRecursive(const std::string& path, const std::string& owner) {
  if (owner.empty() || !RunningAsRoot()) return Status::OK();
  PGSHIFT_ASSIGN_OR_RETURN(OsUser u, LookupOsUser(owner));
  if (lchown(path.c_str(), u.uid, u.gid) != 0) {
    return Internal("cannot chown " + path + ": " + strerror(errno));
  }
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return Status::OK();
  for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (lchown(it->path().c_str(), u.uid, u.gid) != 0) {
      return Internal("cannot chown " + it->path().string() + ": " + strerror(errno));
    }
  }
  return Status::OK();
}

Result<std::string> MakeTempDir(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return Internal("mkdtemp " + templ + ": " + strerror(errno));
  return std::string(buf.data());
}

Status RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return Internal("cannot remove " + path + ": " + ec.message());
  return Status::OK();
}

namespace {

// Ports tried by FreePort: above the well-known services, below the
// ephemeral range.
constexpr int kFirstTestPort = 20000;
constexpr int kLastTestPort = 32767;
constexpr int kFreePortAttempts = 200;

// True when `port` (0: any) binds on 127.0.0.1; the bound port in *bound.
bool BindsOnLoopback(int port, int* bound) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  if (ok) {
    socklen_t len = sizeof addr;
    ok = getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
    *bound = ntohs(addr.sin_port);
  }
  close(fd);
  return ok;
}

}  // namespace

Result<int> FreePort() {
  static std::mutex mu;
  static std::set<int> given;
  static std::mt19937 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  std::uniform_int_distribution<int> pick(kFirstTestPort, kLastTestPort);
  int bound = 0;
  for (int i = 0; i < kFreePortAttempts; ++i) {
    const int port = pick(rng);
    if (given.count(port) == 0 && BindsOnLoopback(port, &bound)) {
      given.insert(port);
      return port;
    }
  }
  // The range is crowded: any port the kernel has free.
  if (!BindsOnLoopback(0, &bound)) return Internal(std::string("bind: ") + strerror(errno));
  given.insert(bound);
  return bound;
}

std::vector<std::string> HostAddresses(const std::string& host) {
  std::vector<std::string> out;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (host.empty() || getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    char buf[NI_MAXHOST];
    if (getnameinfo(a->ai_addr, a->ai_addrlen, buf, sizeof buf, nullptr, 0, NI_NUMERICHOST) == 0)
      out.emplace_back(buf);
  }
  freeaddrinfo(res);
  return out;
}

bool PortOpen(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &addr.sin_addr) != 1) {
    close(fd);
    return false;
  }
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

Status SyncDirectory(const std::string& dir) {
  const std::string d = dir.empty() ? "." : dir;
  Fd fd(open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0 || fsync(fd.get()) != 0) {
    return Internal("cannot fsync directory " + d + ": " + strerror(errno));
  }
  return Status::OK();
}

Result<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound("cannot read " + path + ": " + strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Status WriteFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".pgshift-tmp";
  struct stat st {};
  const bool existed = stat(path.c_str(), &st) == 0;
  Fd file(open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666));
  if (file.get() < 0) return Internal("cannot write " + tmp + ": " + strerror(errno));
  // Reports errno for `what` and leaves no temporary file behind.
  auto fail = [&](const std::string& what) {
    const std::string reason = strerror(errno);
    unlink(tmp.c_str());
    return Internal("cannot " + what + ": " + reason);
  };
  for (size_t done = 0; done < content.size();) {
    ssize_t n = write(file.get(), content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("write " + tmp);
    done += static_cast<size_t>(n);
  }
  if (existed) {
    (void)!fchown(file.get(), st.st_uid, st.st_gid);
    fchmod(file.get(), st.st_mode & 07777);
  }
  // The contents reach the disk before the rename makes them the file's, and
  // the rename itself is made durable through the directory: otherwise a
  // crash may leave an empty file (or the old one) where the new one was
  // acknowledged, e.g. a fence that vanishes from pg_hba.conf.
  if (fsync(file.get()) != 0) return fail("fsync " + tmp);
  if (close(file.release()) != 0) return fail("close " + tmp);
  if (rename(tmp.c_str(), path.c_str()) != 0) return fail("rename " + tmp + " to " + path);
  return SyncDirectory(fs::path(path).parent_path().string());
}

bool PathExists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

bool KeepTestDirs() {
  const char* keep = std::getenv("PGSHIFT_KEEP_TEST_DIRS");
  return keep && *keep == '1';
}

std::string DefaultPgBinDir() {
  if (const char* env = std::getenv("PGSHIFT_PG_BINDIR"); env && *env) return env;
  for (const char* dir : {"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
                          "/usr/lib/postgresql/17/bin", "/usr/local/pgsql/bin"}) {
    if (PathExists(std::string(dir) + "/postgres")) return dir;
  }
  return "/usr/lib/postgresql/15/bin";
}

}  // namespace pgshift
