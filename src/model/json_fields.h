// JSON for the model's typed records, from one list of fields per record.
//
// A record declares each of its JSON keys once, in a static
// `Fields(self, visit)` that calls visit("key", self.member) for every
// member, and keeps an `nlohmann::json unknown` object. WriteRecord and
// ReadRecord both walk that list. Keys a record does not know are kept in
// `unknown` on reading and written back, so a record stored by another
// pgshiftd version survives a round trip. An absent std::optional member
// (or an empty map) writes no key, so a key appears once it is known.
//
// Member types: arithmetic, bool, std::string, Lsn (as "16/B374D848"), Phase
// and CdcSlotState (as their names), std::map<std::string, arithmetic>, nested records,
// std::vector of those, and std::optional of any of them.
// Internal to src/model. Pure functions; thread-safe.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/lsn.h"
#include "common/status.h"
#include "model/cdc.h"
#include "model/phase.h"

namespace pgshift::json_fields {

using json = nlohmann::json;

template <typename T>
concept Record = requires(T r) {
  { r.unknown } -> std::convertible_to<json>;
};

template <typename T>
struct IsOptional : std::false_type {};
template <typename T>
struct IsOptional<std::optional<T>> : std::true_type {};

template <typename T>
struct IsMap : std::false_type {};
template <typename K, typename V>
struct IsMap<std::map<K, V>> : std::true_type {};

inline json ToValue(const Lsn& v) { return v.ToString(); }
inline json ToValue(Phase p) { return PhaseName(p); }
inline json ToValue(CdcSlotState s) { return CdcSlotStateName(s); }
template <Record T>
json ToValue(const T& r);
template <typename T>
json ToValue(const std::vector<T>& v);
template <typename T>
json ToValue(const T& v) {
  return json(v);
}

inline Status FromValue(const json& j, Lsn* out) {
  if (!j.is_string()) return InvalidArgument("must be an LSN string, got " + j.dump());
  PGSHIFT_ASSIGN_OR_RETURN(*out, Lsn::Parse(j.get<std::string>()));
  return Status::OK();
}
inline Status FromValue(const json& j, Phase* out) {
  auto p = j.is_string() ? ParsePhase(j.get<std::string>()) : std::nullopt;
  if (!p) return InvalidArgument("must be a phase name, got " + j.dump());
  *out = *p;
  return Status::OK();
}
inline Status FromValue(const json& j, CdcSlotState* out) {
  auto s = j.is_string() ? ParseCdcSlotState(j.get<std::string>()) : std::nullopt;
  if (!s) return InvalidArgument("must be a CDC slot state name, got " + j.dump());
  *out = *s;
  return Status::OK();
}
template <Record T>
Status FromValue(const json& j, T* out);
template <typename T>
Status FromValue(const json& j, std::vector<T>* out);
template <typename T>
Status FromValue(const json& j, T* out) {
  try {
    *out = j.get<T>();
  } catch (const json::exception&) {
    return InvalidArgument("has the wrong type (got " + j.dump() + ")");
  }
  return Status::OK();
}

// The visitor WriteRecord passes to Fields.
class Writer {
 public:
  explicit Writer(const json& unknown) : out_(unknown.is_object() ? unknown : json::object()) {}

  template <typename T>
  void operator()(const char* key, const T& v) {
    if constexpr (IsOptional<T>::value) {
      if (v) out_[key] = ToValue(*v);
    } else if constexpr (IsMap<T>::value) {
      if (!v.empty()) out_[key] = ToValue(v);
    } else {
      out_[key] = ToValue(v);
    }
  }
  json Take() && { return std::move(out_); }

 private:
  json out_;
};

// The visitor ReadRecord passes to Fields: takes each known key out of the
// input, so what is left is the record's `unknown`.
class Reader {
 public:
  explicit Reader(json in) : rest_(std::move(in)) {}

  template <typename T>
  void operator()(const char* key, T& v) {
    auto it = rest_.find(key);
    if (it == rest_.end()) return;
    Status st;
    if constexpr (IsOptional<T>::value) {
      typename T::value_type value{};
      st = FromValue(*it, &value);
      if (st.ok()) v = std::move(value);
    } else {
      st = FromValue(*it, &v);
    }
    if (!st.ok()) {
      if (status_.ok()) status_ = st.Wrap(std::string("field '") + key + "'");
      return;
    }
    rest_.erase(it);
  }
  const Status& status() const { return status_; }
  json TakeRest() && { return std::move(rest_); }

 private:
  json rest_;
  Status status_;
};

template <Record T>
json WriteRecord(const T& r) {
  Writer w(r.unknown);
  T::Fields(r, w);
  return std::move(w).Take();
}

// null reads as an empty record (nothing recorded yet).
template <Record T>
Result<T> ReadRecord(const json& j) {
  T r;
  if (j.is_null()) return r;
  if (!j.is_object()) return InvalidArgument("must be a JSON object, got " + j.dump());
  Reader reader(j);
  T::Fields(r, reader);
  if (!reader.status().ok()) return reader.status();
  r.unknown = std::move(reader).TakeRest();
  return r;
}

template <Record T>
json ToValue(const T& r) {
  return WriteRecord(r);
}
template <typename T>
json ToValue(const std::vector<T>& v) {
  json out = json::array();
  for (const auto& e : v) out.push_back(ToValue(e));
  return out;
}

template <Record T>
Status FromValue(const json& j, T* out) {
  PGSHIFT_ASSIGN_OR_RETURN(*out, ReadRecord<T>(j));
  return Status::OK();
}
template <typename T>
Status FromValue(const json& j, std::vector<T>* out) {
  if (!j.is_array()) return InvalidArgument("must be a JSON array, got " + j.dump());
  out->clear();
  for (size_t i = 0; i < j.size(); ++i) {
    T e{};
    PGSHIFT_RETURN_IF_ERROR(FromValue(j[i], &e).Wrap("item " + std::to_string(i)));
    out->push_back(std::move(e));
  }
  return Status::OK();
}

}  // namespace pgshift::json_fields
