#include "checks/install.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>

#include "common/os.h"
#include "common/process.h"

namespace pgshift::checks {

namespace {

std::string Chomp(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

bool HasExtensionDir(const std::string& share) {
  return PathExists(share + "/extension/plpgsql.control");
}

}  // namespace

Result<Installation> ResolveInstallation(const std::string& dir) {
  namespace fs = std::filesystem;
  Installation inst;
  std::string d = dir.empty() ? DefaultPgBinDir() : dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  if (PathExists(d + "/postgres")) {
    inst.bin_dir = d;
  } else if (PathExists(d + "/bin/postgres")) {
    inst.bin_dir = d + "/bin";
  } else {
    return InvalidArgument("'" + d + "' is not a PostgreSQL installation: neither " + d +
                           "/postgres nor " + d + "/bin/postgres exists (pass the directory "
                           "holding the server binaries)");
  }
  if (PathExists(inst.bin_dir + "/pg_config")) {
    auto share = RunChecked(DefaultRunner(), {.argv = {inst.bin_dir + "/pg_config", "--sharedir"},
                                              .timeout_ms = 30000});
    auto lib = RunChecked(DefaultRunner(), {.argv = {inst.bin_dir + "/pg_config", "--pkglibdir"},
                                            .timeout_ms = 30000});
    if (share.ok() && lib.ok() && HasExtensionDir(Chomp(*share))) {
      inst.share_dir = Chomp(*share);
      inst.pkglib_dir = Chomp(*lib);
      return inst;
    }
  }
  const fs::path bin(inst.bin_dir);
  // Debian: <prefix>/lib/postgresql/N/bin with <prefix>/share/postgresql/N.
  const fs::path version_dir = bin.parent_path();
  const fs::path prefix = version_dir.parent_path().parent_path().parent_path();
  const std::string debian_share =
      (prefix / "share" / "postgresql" / version_dir.filename()).string();
  if (HasExtensionDir(debian_share)) {
    inst.share_dir = debian_share;
    inst.pkglib_dir = (version_dir / "lib").string();
    return inst;
  }
  for (const char* sub : {"share/postgresql", "share"}) {
    const std::string share = (bin.parent_path() / sub).string();
    if (HasExtensionDir(share)) {
      inst.share_dir = share;
      inst.pkglib_dir = PathExists((bin.parent_path() / "lib/postgresql").string())
                            ? (bin.parent_path() / "lib/postgresql").string()
                            : (bin.parent_path() / "lib").string();
      return inst;
    }
  }
  return NotFound("cannot find the share directory (extension/*.control) of the PostgreSQL "
                  "installation in " + inst.bin_dir +
                  ": pg_config is missing and no known layout matched");
}

Result<int> InstalledMajorVersion(const std::string& bin_dir) {
  PGSHIFT_ASSIGN_OR_RETURN(
      std::string out,
      RunChecked(DefaultRunner(), {.argv = {bin_dir + "/postgres", "-V"}, .timeout_ms = 30000}));
  std::smatch m;
  if (!std::regex_search(out, m, std::regex(R"(\(PostgreSQL\)\s+(\d+))"))) {
    return Internal("unexpected output from " + bin_dir + "/postgres -V: " + Chomp(out));
  }
  return std::atoi(m[1].str().c_str());
}

Result<std::string> ElfArchitecture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char h[20] = {};
  if (!in.read(reinterpret_cast<char*>(h), sizeof h)) {
    return NotFound("cannot read " + path);
  }
  if (h[0] != 0x7f || h[1] != 'E' || h[2] != 'L' || h[3] != 'F') {
    return InvalidArgument(path + " is not an ELF executable");
  }
  const bool little = h[5] == 1;
  const int machine = little ? (h[18] | (h[19] << 8)) : ((h[18] << 8) | h[19]);
  switch (machine) {
    case 3: return std::string("i686");
    case 8: return std::string("mips");
    case 20: return std::string("powerpc");
    case 21: return std::string(little ? "powerpc64le" : "powerpc64");
    case 22: return std::string("s390x");
    case 40: return std::string("arm");
    case 62: return std::string("x86_64");
    case 183: return std::string("aarch64");
    case 243: return std::string("riscv64");
    default: return Internal(path + ": unknown ELF machine " + std::to_string(machine));
  }
}

std::string ArchitectureFromVersionString(const std::string& version) {
  std::smatch m;
  if (!std::regex_search(version, m, std::regex(R"( on ([A-Za-z0-9_]+)-)"))) return "";
  std::string arch = m[1].str();
  if (arch == "i386" || arch == "i486" || arch == "i586") arch = "i686";
  if (arch == "arm64") arch = "aarch64";
  if (arch.rfind("arm", 0) == 0 && arch != "aarch64") arch = "arm";
  if (arch == "amd64") arch = "x86_64";
  return arch;
}

}  // namespace pgshift::checks
