#include "api/web_assets.h"

#include <httplib.h>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace pgshift::api {
namespace {

constexpr std::string_view kIndexFile = "index.html";
// The page loads only its own files and talks only to pgshiftd; no inline
// script or style, no framing.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
// Files are not content-hashed: browsers revalidate them with the ETag.
constexpr const char* kCacheControl = "no-cache";

struct TypeByExtension {
  std::string_view ext;
  std::string_view type;
};
constexpr TypeByExtension kContentTypes[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".json", "application/json"},
    {".png", "image/png"},
    {".woff2", "font/woff2"},
};

std::string_view ContentTypeFor(std::string_view path) {
  for (const auto& t : kContentTypes) {
    if (path.ends_with(t.ext)) return t.type;
  }
  return "application/octet-stream";
}

// FNV-1a: a validator for caches, not a security boundary.
std::string ETagFor(std::string_view body) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof(buf), "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<WebAsset> BuildTable() {
  std::vector<WebAsset> table;
  for (size_t i = 0; i < kEmbeddedWebFileCount; ++i) {
    const EmbeddedWebFile& f = kEmbeddedWebFiles[i];
    std::string_view rel = f.path;
    std::string_view body(reinterpret_cast<const char*>(f.data), f.size);
    WebAsset a{rel == kIndexFile ? std::string("/") : "/" + std::string(rel), ContentTypeFor(rel),
               body, ETagFor(body)};
    if (rel == kIndexFile) {
      table.insert(table.begin(), std::move(a));
    } else {
      table.push_back(std::move(a));
    }
  }
  return table;
}

const std::vector<WebAsset>& Table() {
  static const auto* table = new std::vector<WebAsset>(BuildTable());
  return *table;
}

}  // namespace

std::span<const WebAsset> WebAssets() { return Table(); }

const WebAsset* FindWebAsset(std::string_view path) {
  if (path == "/index.html") path = "/";
  if (path != "/" && !path.starts_with(kWebAssetPrefix)) return nullptr;
  for (const auto& a : Table()) {
    if (a.path == path) return &a;
  }
  return nullptr;
}

bool ServeWebAsset(const httplib::Request& req, httplib::Response& res) {
  if (req.method != "GET" && req.method != "HEAD") return false;
  const WebAsset* asset = FindWebAsset(req.path);
  if (!asset) return false;
  res.set_header("Cache-Control", kCacheControl);
  res.set_header("ETag", asset->etag);
  res.set_header("Content-Security-Policy", kContentSecurityPolicy);
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  if (req.get_header_value("If-None-Match") == asset->etag) {
    res.status = 304;
    return true;
  }
  res.status = 200;
  res.set_content(asset->body.data(), asset->body.size(), std::string(asset->content_type));
  return true;
}

}  // namespace pgshift::api
