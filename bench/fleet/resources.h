// Resource probes for bench-fleet: what one process costs (CPU time, RSS)
// and what the host has left (memory, disk, file descriptors, processes), so
// the bench can stop adding clusters before the machine runs out and name the
// resource that did. Linux /proc only. Pure reads; thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pgshift::bench {

// One process's own usage (not its children's), from /proc/<pid>.
struct ProcUsage {
  double cpu_s = 0;           // utime + stime
  double children_cpu_s = 0;  // cutime + cstime: reaped children (pg_basebackup, pg_ctl, psql)
  double rss_mb = 0;          // VmRSS now
  double hwm_mb = 0;          // VmHWM: the peak RSS
  int threads = 0;
  int fds = 0;  // open file descriptors
};
Result<ProcUsage> ReadProcUsage(pid_t pid);

// The host as a whole.
struct HostUsage {
  double mem_available_mb = 0;  // MemAvailable
  double mem_total_mb = 0;
  double shmem_mb = 0;      // Shmem: tmpfs and shared memory segments
  double disk_free_mb = 0;  // statvfs of the bench directory
  int64_t fds_open = 0;     // /proc/sys/fs/file-nr: allocated
  int64_t fds_max = 0;      // fs.file-max
  int64_t processes = 0;    // tasks in /proc (processes, not threads)
  int64_t pid_max = 0;      // kernel.pid_max
  double load1 = 0;         // loadavg over 1 minute
};
HostUsage ReadHostUsage(const std::string& disk_path);

// "load 10.2, mem avail 12345 MB, disk free 6789 MB, fds 1234/..., procs 567"
std::string Describe(const HostUsage& h);

// The uptime(1) line, to record beside a result.
std::string UptimeLine();

}  // namespace pgshift::bench
