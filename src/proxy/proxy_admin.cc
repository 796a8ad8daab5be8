// The admin HTTP API of pgshift-proxy (README "Admin API"): route listing,
// stats and metrics, hold / release / repoint / switch, prewarm, the backends
// of a drained hold, and the replication sessions of a route. Handlers run on
// the admin thread; everything they touch is thread-safe (ProxyShared, Route).
#include <httplib.h>

#include "proxy/proxy.h"

namespace pgshift::proxy {
namespace {

// The route a request's path names (matches[1]); null after a 404 reply.
using RouteFinder =
    std::function<std::shared_ptr<Route>(const httplib::Request&, httplib::Response&)>;

void JsonReply(httplib::Response& res, int status, const nlohmann::json& j) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

void ErrorReply(httplib::Response& res, int status, const std::string& msg) {
  JsonReply(res, status, {{"error", msg}});
}

Result<nlohmann::json> Body(const httplib::Request& req) {
  if (req.body.empty()) return nlohmann::json::object();
  try {
    auto j = nlohmann::json::parse(req.body);
    if (!j.is_object()) return InvalidArgument("request body must be a JSON object");
    return j;
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("request body is not valid JSON: ") + e.what());
  }
}

// The "upstream" object of a request body ({"upstream":{"host","port",...}}).
Result<UpstreamConfig> BodyUpstream(const httplib::Request& req) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, Body(req));
  if (!body.contains("upstream")) return InvalidArgument("body needs \"upstream\"");
  return ParseUpstream(body["upstream"], "upstream");
}

// The body's optional "wait_ms" (0 to kMaxAdminWaitMs), else `otherwise`.
Result<int64_t> BodyWaitMs(const httplib::Request& req, int64_t otherwise) {
  PGSHIFT_ASSIGN_OR_RETURN(nlohmann::json body, Body(req));
  if (!body.contains("wait_ms")) return otherwise;
  const auto& w = body["wait_ms"];
  if (!w.is_number_integer() || w.get<int64_t>() < 0 || w.get<int64_t>() > kMaxAdminWaitMs)
    return InvalidArgument("wait_ms must be an integer from 0 to " +
                           std::to_string(kMaxAdminWaitMs));
  return w.get<int64_t>();
}

// The body's optional integer `key` in [min, max], else `otherwise`.
Result<int64_t> BodyInt(const nlohmann::json& body, const std::string& key, int64_t min,
                        int64_t max, int64_t otherwise) {
  if (!body.contains(key)) return otherwise;
  const auto& v = body[key];
  if (!v.is_number_integer() || v.get<int64_t>() < min || v.get<int64_t>() > max)
    return InvalidArgument(key + " must be an integer from " + std::to_string(min) + " to " +
                           std::to_string(max));
  return v.get<int64_t>();
}

// The body's optional "epoch" of a hold (0 when absent: whichever hold).
Result<uint64_t> BodyEpoch(const nlohmann::json& body) {
  if (!body.contains("epoch")) return uint64_t{0};
  if (!body["epoch"].is_number_unsigned() || body["epoch"].get<uint64_t>() == 0)
    return InvalidArgument("epoch must be a positive integer (the one the hold returned)");
  return body["epoch"].get<uint64_t>();
}

// The replication-session calls (session_replication.cc has the session side).
void AddReplicationHandlers(httplib::Server& srv, const RouteFinder& find) {
  // pgshiftd tells a slot's consumer that comes through the route by its
  // walsender: backend_pid is pg_replication_slots.active_pid.
  srv.Get(R"(/routes/([^/]+)/replication)",
          [find](const httplib::Request& req, httplib::Response& res) {
            auto r = find(req, res);
            if (!r) return;
            std::string host;
            int port = 0;
            if (req.has_param("upstream")) {
              Status st = ParseHostPort(req.get_param_value("upstream"), "upstream", &host, &port);
              if (!st.ok()) return ErrorReply(res, 400, st.message());
            }
            nlohmann::json sessions = nlohmann::json::array();
            for (const auto& s : r->ReplicationSessions())
              if (host.empty() || (s.server.host == host && s.server.port == port))
                sessions.push_back(ToJson(s));
            JsonReply(res, 200, {{"route", r->name()}, {"sessions", sessions}});
          });
  srv.Post(R"(/routes/([^/]+)/replication/feedback)",
           [find](const httplib::Request& req, httplib::Response& res) {
             auto r = find(req, res);
             if (!r) return;
             JsonReply(res, 200,
                       {{"route", r->name()}, {"sessions_asked", r->RequestReplicationFeedback()}});
           });
  srv.Post(R"(/routes/([^/]+)/replication/pause)", [find](const httplib::Request& req,
                                                          httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto wait_ms = BodyWaitMs(req, kDefaultReplicationPauseWaitMs);
    if (!wait_ms.ok()) return ErrorReply(res, 400, wait_ms.status().message());
    Route::PauseOutcome out = r->PauseReplication(*wait_ms);
    JsonReply(res, 200,
              {{"route", r->name()}, {"sessions_paused", out.asked}, {"pending", out.pending}});
  });
}

}  // namespace

Status Proxy::StartAdmin() {
  admin_ = std::make_unique<httplib::Server>();
  auto& srv = *admin_;
  // Admin calls sit on the cutover's critical path: no Nagle / delayed-ACK stalls.
  srv.set_tcp_nodelay(true);
  ProxyShared& sh = *shared_;
  RouteFinder find = [&sh](const httplib::Request& req,
                           httplib::Response& res) -> std::shared_ptr<Route> {
    auto r = sh.routes.Find(req.matches[1]);
    if (!r) ErrorReply(res, 404, "no route named \"" + std::string(req.matches[1]) + "\"");
    return r;
  };
  AddReplicationHandlers(srv, find);
  srv.Get("/health", [&sh](const httplib::Request&, httplib::Response& res) {
    JsonReply(res, 200, {{"status", "ok"}, {"routes", sh.routes.List().size()}});
  });
  srv.Get("/stats", [&sh](const httplib::Request&, httplib::Response& res) {
    JsonReply(res, 200, StatsJson(sh.Stats(), StatScope::kProxy));
  });
  srv.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(MetricsText(), "text/plain; version=0.0.4");
  });
  srv.Get("/routes", [&sh](const httplib::Request&, httplib::Response& res) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : sh.routes.List()) j.push_back(r->ToJson());
    JsonReply(res, 200, j);
  });
  srv.Get(R"(/routes/([^/]+))", [find](const httplib::Request& req, httplib::Response& res) {
    if (auto r = find(req, res)) JsonReply(res, 200, r->ToJson());
  });
  srv.Get(R"(/routes/([^/]+)/stats)", [find](const httplib::Request& req, httplib::Response& res) {
    if (auto r = find(req, res)) JsonReply(res, 200, r->StatsJson());
  });
  // For a fence that leaves the held sessions' backends alive. The proxy does
  // not know which route a session's cancel target belongs to, so it lists
  // every backend of its sessions on that server; the route's own are those
  // connected to its database (one route per database), which the fence
  // checks on the server. Pins the hold (Route::PinBackends).
  srv.Get(R"(/routes/([^/]+)/backends)", [&sh, find](const httplib::Request& req,
                                                     httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    UpstreamConfig on = r->target().upstream;
    if (req.has_param("upstream")) {
      Status st = ParseHostPort(req.get_param_value("upstream"), "upstream", &on.host, &on.port);
      if (!st.ok()) return ErrorReply(res, 400, st.message());
    }
    if (!r->PinBackends()) {
      return ErrorReply(res, 409,
                        "route \"" + r->name() +
                            "\" is not held (or its hold has not drained): its "
                            "sessions may be inside a transaction");
    }
    std::vector<uint32_t> pids = sh.cancels.UpstreamPidsOn(on.host, on.port);
    JsonReply(res, 200,
              {{"route", r->name()},
               {"database", r->database()},
               {"upstream", on.host + ":" + std::to_string(on.port)},
               {"backend_pids", pids}});
  });
  srv.Put(R"(/routes/([^/]+))", [this, &sh](const httplib::Request& req, httplib::Response& res) {
    auto body = Body(req);
    if (!body.ok()) return ErrorReply(res, 400, body.status().message());
    std::string name = req.matches[1];
    for (const auto& [k, v] : body->items())
      if (k != "upstream" && k != "database" && k != "allow_plaintext" && k != "hold_timeout_ms" &&
          k != "uncarriable")
        return ErrorReply(res, 400, "unknown field \"" + k + "\" in route body");
    if (!body->contains("upstream")) return ErrorReply(res, 400, "body needs \"upstream\"");
    auto up = ParseUpstream((*body)["upstream"], "upstream");
    if (!up.ok()) return ErrorReply(res, 400, up.status().message());
    Status st;
    if (sh.routes.Find(name)) {
      st = RepointRoute(name, *up);
    } else {
      RouteConfig rc{.name = name, .upstream = *up};
      rc.database = body->value("database", std::string());
      rc.allow_plaintext = body->value("allow_plaintext", false);
      rc.hold_timeout_ms = body->value("hold_timeout_ms", kDefaultHoldTimeoutMs);
      if (body->contains("uncarriable")) {
        auto mode = ParseUncarriableMode((*body)["uncarriable"], "uncarriable");
        if (!mode.ok()) return ErrorReply(res, 400, mode.status().message());
        rc.uncarriable = *mode;
      }
      if (rc.database.empty())
        return ErrorReply(res, 404,
                          "no route named \"" + name + "\" (to create one, give \"database\" too)");
      st = AddRoute(rc);
    }
    if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    JsonReply(res, 200, sh.routes.Find(name)->ToJson());
  });
  // {"timeout_ms": drain bound, "lease_ms": lease once drained}; answers the
  // route with "hold_epoch", which renew, release and switch may name.
  srv.Post(R"(/routes/([^/]+)/hold)", [find](const httplib::Request& req, httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto body = Body(req);
    if (!body.ok()) return ErrorReply(res, 400, body.status().message());
    int64_t timeout = r->hold_timeout_ms();
    if (body->contains("timeout_ms")) {
      if (!(*body)["timeout_ms"].is_number_integer() || (*body)["timeout_ms"].get<int64_t>() <= 0)
        return ErrorReply(res, 400, "timeout_ms must be a positive integer");
      timeout = (*body)["timeout_ms"].get<int64_t>();
    }
    auto lease = BodyInt(*body, "lease_ms", 1, kMaxHoldLeaseMs, kDefaultHoldLeaseMs);
    if (!lease.ok()) return ErrorReply(res, 400, lease.status().message());
    auto epoch = r->HoldLeased(timeout, *lease);
    if (!epoch.ok())
      return ErrorReply(res, HttpStatusFor(epoch.status().code()), epoch.status().message());
    nlohmann::json j = r->ToJson();
    j["hold_epoch"] = *epoch;
    JsonReply(res, 200, j);
  });
  // {"epoch": N}: the hold's holder is still there; 409 once it is not this hold.
  srv.Post(R"(/routes/([^/]+)/renew)", [find](const httplib::Request& req, httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto body = Body(req);
    if (!body.ok()) return ErrorReply(res, 400, body.status().message());
    auto epoch = BodyEpoch(*body);
    if (!epoch.ok()) return ErrorReply(res, 400, epoch.status().message());
    if (*epoch == 0) return ErrorReply(res, 400, "body needs \"epoch\"");
    Status st = r->Renew(*epoch);
    if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    JsonReply(res, 200, r->ToJson());
  });
  // Logins on the next endpoint opened ahead of a switch (Route::Prewarm).
  srv.Post(R"(/routes/([^/]+)/prewarm)", [find](const httplib::Request& req,
                                                httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto up = BodyUpstream(req);
    if (!up.ok()) return ErrorReply(res, 400, up.status().message());
    // "wait_ms": answer once the logins are open (or that time has
    // passed), so a hold that follows does not start while they are.
    auto wait_ms = BodyWaitMs(req, 0);
    if (!wait_ms.ok()) return ErrorReply(res, 400, wait_ms.status().message());
    int asked = r->Prewarm(*up);
    int64_t pending = *wait_ms > 0 ? r->WaitPrewarmed(*wait_ms) : r->prewarms_pending.load();
    JsonReply(res, 200, {{"route", r->name()}, {"sessions_asked", asked}, {"pending", pending}});
  });
  // Optional {"epoch": N}: only that hold (409 when another is in place).
  srv.Post(R"(/routes/([^/]+)/release)",
           [find](const httplib::Request& req, httplib::Response& res) {
             auto r = find(req, res);
             if (!r) return;
             auto body = Body(req);
             if (!body.ok()) return ErrorReply(res, 400, body.status().message());
             auto epoch = BodyEpoch(*body);
             if (!epoch.ok()) return ErrorReply(res, 400, epoch.status().message());
             if (*epoch == 0) {
               r->Release();
             } else if (Status st = r->ReleaseHold(*epoch); !st.ok()) {
               return ErrorReply(res, HttpStatusFor(st.code()), st.message());
             }
             JsonReply(res, 200, r->ToJson());
           });
  // {"upstream", optional "epoch"}: repoint and release in one call. With
  // an epoch, only while that hold is in place: 409 and nothing moved once
  // it lapsed or was released.
  srv.Post(R"(/routes/([^/]+)/switch)", [this, find](const httplib::Request& req,
                                                     httplib::Response& res) {
    auto r = find(req, res);
    if (!r) return;
    auto up = BodyUpstream(req);
    if (!up.ok()) return ErrorReply(res, 400, up.status().message());
    auto body = Body(req);
    auto epoch = body.ok() ? BodyEpoch(*body) : Result<uint64_t>(body.status());
    if (!epoch.ok()) return ErrorReply(res, 400, epoch.status().message());
    Status st = *epoch == 0 ? RepointRoute(r->name(), *up) : SwitchRoute(r->name(), *epoch, *up);
    if (*epoch == 0) {
      r->Release();
    } else if (st.code() == Code::kFailedPrecondition) {
      // The hold is gone and nothing moved: leave the route as it is.
      return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    } else {
      (void)r->ReleaseHold(*epoch);  // not held any more: its lease lapsed onto `up`
    }
    if (!st.ok()) return ErrorReply(res, HttpStatusFor(st.code()), st.message());
    JsonReply(res, 200, r->ToJson());
  });
  srv.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) ErrorReply(res, res.status, "no such admin endpoint");
  });
  if (sh.config.admin_port == 0) {
    admin_port_ = srv.bind_to_any_port(sh.config.admin_host);
    if (admin_port_ < 0) return Unavailable("cannot bind the admin API on " + sh.config.admin_host);
  } else {
    if (!srv.bind_to_port(sh.config.admin_host, sh.config.admin_port))
      return Unavailable("cannot bind the admin API on " + sh.config.admin_host + ":" +
                         std::to_string(sh.config.admin_port));
    admin_port_ = sh.config.admin_port;
  }
  admin_thread_ = std::thread([&srv] { srv.listen_after_bind(); });
  return Status::OK();
}

}  // namespace pgshift::proxy
