// The embedded web page: what pgshiftd answers for "/" and "/ui/*", and
// that the page's references all resolve to embedded files.
#include "api/web_assets.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <regex>
#include <set>

namespace pgshift::api {
namespace {

httplib::Response Serve(const std::string& method, const std::string& path, bool* handled,
                        const std::string& if_none_match = "") {
  httplib::Request req;
  req.method = method;
  req.path = path;
  if (!if_none_match.empty()) req.headers.emplace("If-None-Match", if_none_match);
  httplib::Response res;
  *handled = ServeWebAsset(req, res);
  return res;
}

TEST(WebAssets, IndexIsServedAtRootWithAStrictPolicy) {
  bool handled = false;
  auto res = Serve("GET", "/", &handled);
  ASSERT_TRUE(handled);
  EXPECT_EQ(res.status, 200);
  EXPECT_EQ(res.get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(res.body.find("<title>pgshift</title>"), std::string::npos);
  const std::string csp = res.get_header_value("Content-Security-Policy");
  EXPECT_NE(csp.find("default-src 'self'"), std::string::npos);
  EXPECT_NE(csp.find("frame-ancestors 'none'"), std::string::npos);
  EXPECT_EQ(csp.find("unsafe-inline"), std::string::npos);
  EXPECT_EQ(res.get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(Serve("GET", "/index.html", &handled).body, res.body);
  EXPECT_EQ(WebAssets().front().path, "/");
}

TEST(WebAssets, EveryFileThePageReferencesIsEmbedded) {
  const WebAsset* index = FindWebAsset("/");
  ASSERT_NE(index, nullptr);
  std::string html(index->body);
  std::regex ref(R"re((?:src|href)="(/[^"]*)")re");
  std::set<std::string> refs;
  for (std::sregex_iterator it(html.begin(), html.end(), ref), end; it != end; ++it) {
    refs.insert((*it)[1]);
  }
  EXPECT_TRUE(refs.count("/ui/app.js"));
  EXPECT_TRUE(refs.count("/ui/app.css"));
  for (const auto& r : refs) {
    const WebAsset* a = FindWebAsset(r);
    ASSERT_NE(a, nullptr) << r;
    EXPECT_FALSE(a->body.empty()) << r;
  }
  EXPECT_EQ(FindWebAsset("/ui/app.js")->content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(FindWebAsset("/ui/app.css")->content_type, "text/css; charset=utf-8");
}

TEST(WebAssets, NoExternalResource) {
  // Works offline: nothing is fetched from another origin.
  for (const auto& a : WebAssets()) {
    if (a.content_type.find("text/html") == 0 || a.content_type.find("text/css") == 0) {
      EXPECT_EQ(a.body.find("http://"), std::string::npos) << a.path;
      EXPECT_EQ(a.body.find("https://"), std::string::npos) << a.path;
    }
  }
}

TEST(WebAssets, ETagRevalidates) {
  bool handled = false;
  auto first = Serve("GET", "/ui/app.js", &handled);
  ASSERT_TRUE(handled);
  const std::string etag = first.get_header_value("ETag");
  ASSERT_FALSE(etag.empty());
  EXPECT_EQ(first.get_header_value("Cache-Control"), "no-cache");
  auto again = Serve("GET", "/ui/app.js", &handled, etag);
  ASSERT_TRUE(handled);
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  auto stale = Serve("GET", "/ui/app.js", &handled, "\"0000000000000000\"");
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.body.size(), FindWebAsset("/ui/app.js")->body.size());
}

TEST(WebAssets, OtherRequestsAreLeftToTheApi) {
  bool handled = true;
  for (const char* path : {"/v1/whoami", "/healthz", "/ui/missing.js", "/ui/", "/ui", "/index.htm",
                           "/ui/../index.html"}) {
    auto res = Serve("GET", path, &handled);
    EXPECT_FALSE(handled) << path;
  }
  Serve("POST", "/", &handled);
  EXPECT_FALSE(handled);
  Serve("DELETE", "/ui/app.js", &handled);
  EXPECT_FALSE(handled);
  Serve("HEAD", "/ui/app.css", &handled);
  EXPECT_TRUE(handled);
}

}  // namespace
}  // namespace pgshift::api
