// ConfigDoc: a YAML (or JSON, which is YAML too) configuration file read into
// JSON together with the line of every value, so that an error names the
// file, the line and the field (registry, access and secrets files).
//
// Scalars follow YAML's core schema where it is unsurprising: null/~, true,
// false, integers and decimals are typed; everything else, and every quoted
// scalar, is a string ("yes"/"no" stay strings). Mapping keys are strings;
// a duplicate key is an error. Plain values; thread-compatible.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace pgshift::auth {

struct ConfigDoc {
  std::string path;
  nlohmann::json root;  // null for an empty file
  // JSON pointer ("/databases/app/team") → 1-based line of its key (of
  // the value itself for sequence items and the root).
  std::map<std::string, int> lines;

  // The line of `pointer`, or of its nearest ancestor that has one; 0 if none.
  int LineOf(const std::string& pointer) const;
  // InvalidArgument "PATH:LINE: field F: message" (line left out when unknown).
  Status Error(const std::string& pointer, const std::string& message) const;
};

// A mapping key escaped for a JSON pointer ("a/b" → "a~1b").
std::string PointerToken(const std::string& key);
// "/databases/app/tags/0" → "databases.app.tags[0]".
std::string FieldName(const std::string& pointer);

// Parses YAML text; `path` only labels errors.
Result<ConfigDoc> ParseConfigDoc(const std::string& text, const std::string& path);
Result<ConfigDoc> LoadConfigDoc(const std::string& path);

// Refuses a file that is not a regular file, that group or others may read
// or write, or that another user than this process's owns: `what` holds
// secrets (e.g. "the tokens file"). The message says how to fix it.
Status CheckPrivateFile(const std::string& path, const std::string& what);

}  // namespace pgshift::auth
