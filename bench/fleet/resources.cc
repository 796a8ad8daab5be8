#include "bench/fleet/resources.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/os.h"

namespace pgshift::bench {

namespace {

// The number after "Key:" in /proc/meminfo or /proc/<pid>/status.
double Field(const std::string& text, const std::string& key) {
  const std::string padded = "\n" + text;
  const size_t at = padded.find("\n" + key + ":");
  if (at == std::string::npos) return 0;
  return std::strtod(padded.c_str() + at + key.size() + 2, nullptr);
}

double MbField(const std::string& text, const std::string& key) { return Field(text, key) / 1024; }

int64_t FirstNumber(const std::string& path, int index) {
  auto text = ReadFile(path);
  if (!text.ok()) return 0;
  std::istringstream in(*text);
  int64_t v = 0;
  for (int i = 0; i <= index && (in >> v); ++i) {
  }
  return v;
}

int CountEntries(const std::string& dir, bool digits_only) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename();
    if (!digits_only || name.find_first_not_of("0123456789") == std::string::npos) ++n;
  }
  return n;
}

}  // namespace

Result<ProcUsage> ReadProcUsage(pid_t pid) {
  const std::string base = "/proc/" + std::to_string(pid);
  PGSHIFT_ASSIGN_OR_RETURN(std::string stat, ReadFile(base + "/stat"));
  PGSHIFT_ASSIGN_OR_RETURN(std::string status, ReadFile(base + "/status"));
  // Fields after the command name, which may hold spaces: from the last ')'.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return Internal("unreadable " + base + "/stat");
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  std::vector<std::string> f;
  while (in >> field) f.push_back(field);
  // f[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
  if (f.size() < 15) return Internal("short " + base + "/stat");
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  ProcUsage u;
  u.cpu_s = (std::stod(f[11]) + std::stod(f[12])) / tick;
  u.children_cpu_s = (std::stod(f[13]) + std::stod(f[14])) / tick;
  u.rss_mb = MbField(status, "VmRSS");
  u.hwm_mb = MbField(status, "VmHWM");
  u.threads = static_cast<int>(Field(status, "Threads"));
  u.fds = CountEntries(base + "/fd", false);
  return u;
}

HostUsage ReadHostUsage(const std::string& disk_path) {
  HostUsage h;
  if (auto mem = ReadFile("/proc/meminfo"); mem.ok()) {
    h.mem_available_mb = MbField(*mem, "MemAvailable");
    h.mem_total_mb = MbField(*mem, "MemTotal");
    h.shmem_mb = MbField(*mem, "Shmem");
  }
  struct statvfs vfs;
  if (statvfs(disk_path.c_str(), &vfs) == 0) {
    h.disk_free_mb = static_cast<double>(vfs.f_bavail) * vfs.f_frsize / (1024.0 * 1024.0);
  }
  h.fds_open = FirstNumber("/proc/sys/fs/file-nr", 0);
  h.fds_max = FirstNumber("/proc/sys/fs/file-max", 0);
  h.pid_max = FirstNumber("/proc/sys/kernel/pid_max", 0);
  h.processes = CountEntries("/proc", true);
  if (auto load = ReadFile("/proc/loadavg"); load.ok())
    h.load1 = std::strtod(load->c_str(), nullptr);
  return h;
}

std::string Describe(const HostUsage& h) {
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "load %.1f, mem available %.0f/%.0f MB (shmem %.0f MB), disk free %.0f MB, "
                "fds %lld/%lld, processes %lld/%lld",
                h.load1, h.mem_available_mb, h.mem_total_mb, h.shmem_mb, h.disk_free_mb,
                static_cast<long long>(h.fds_open), static_cast<long long>(h.fds_max),
                static_cast<long long>(h.processes), static_cast<long long>(h.pid_max));
  return buf;
}

std::string UptimeLine() {
  auto load = ReadFile("/proc/loadavg");
  auto up = ReadFile("/proc/uptime");
  char buf[160];
  std::snprintf(
      buf, sizeof buf, "up %.0f min, load average: %s",
      up.ok() ? std::strtod(up->c_str(), nullptr) / 60 : 0.0,
      load.ok() ? load->substr(0, load->find(' ', load->find(' ', load->find(' ') + 1) + 1)).c_str()
                : "?");
  return buf;
}

}  // namespace pgshift::bench
