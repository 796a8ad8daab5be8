#include "auth/config_doc.h"

#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include <cerrno>
#include <cstring>
#include <regex>

#include "common/os.h"

namespace pgshift::auth {
namespace {

using nlohmann::json;

// Aliases could nest without bound; real configuration files are shallow.
constexpr int kMaxDepth = 64;

// RAII for libyaml's parser and document.
struct YamlParser {
  yaml_parser_t p;
  YamlParser() { yaml_parser_initialize(&p); }
  ~YamlParser() { yaml_parser_delete(&p); }
};
struct YamlDocument {
  yaml_document_t d;
  bool loaded = false;
  ~YamlDocument() {
    if (loaded) yaml_document_delete(&d);
  }
};

}  // namespace

std::string PointerToken(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

json PlainScalar(const std::string& v) {
  static const std::regex kInt(R"([-+]?[0-9]+)");
  static const std::regex kFloat(R"([-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?)");
  if (v.empty() || v == "~" || v == "null" || v == "Null" || v == "NULL") return nullptr;
  if (v == "true" || v == "True" || v == "TRUE") return true;
  if (v == "false" || v == "False" || v == "FALSE") return false;
  try {
    if (std::regex_match(v, kInt)) return std::stoll(v);
    if (std::regex_match(v, kFloat)) return std::stod(v);
  } catch (const std::exception&) {
    // Out of range: keep the text.
  }
  return v;
}

class Converter {
 public:
  Converter(yaml_document_t* doc, ConfigDoc* out) : doc_(doc), out_(out) {}

  Result<json> Convert(yaml_node_t* node, const std::string& pointer, int depth) {
    if (depth > kMaxDepth) return out_->Error(pointer, "nested too deeply");
    // A mapping's child already has its key's line, which names the field best.
    out_->lines.emplace(pointer, static_cast<int>(node->start_mark.line) + 1);
    switch (node->type) {
      case YAML_SCALAR_NODE: {
        std::string v(reinterpret_cast<const char*>(node->data.scalar.value),
                      node->data.scalar.length);
        if (node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return json(v);
        return PlainScalar(v);
      }
      case YAML_SEQUENCE_NODE: {
        json arr = json::array();
        int i = 0;
        for (yaml_node_item_t* it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; ++it, ++i) {
          PGSHIFT_ASSIGN_OR_RETURN(json v, Convert(yaml_document_get_node(doc_, *it),
                                                   pointer + "/" + std::to_string(i), depth + 1));
          arr.push_back(std::move(v));
        }
        return arr;
      }
      case YAML_MAPPING_NODE: {
        json obj = json::object();
        for (yaml_node_pair_t* pair = node->data.mapping.pairs.start;
             pair < node->data.mapping.pairs.top; ++pair) {
          yaml_node_t* key = yaml_document_get_node(doc_, pair->key);
          if (key->type != YAML_SCALAR_NODE) {
            out_->lines[pointer + "/?"] = static_cast<int>(key->start_mark.line) + 1;
            return out_->Error(pointer + "/?", "a mapping key must be a plain name");
          }
          std::string k(reinterpret_cast<const char*>(key->data.scalar.value),
                        key->data.scalar.length);
          const std::string child = pointer + "/" + PointerToken(k);
          out_->lines[child] = static_cast<int>(key->start_mark.line) + 1;
          if (obj.contains(k)) return out_->Error(child, "duplicate key '" + k + "'");
          PGSHIFT_ASSIGN_OR_RETURN(
              json v, Convert(yaml_document_get_node(doc_, pair->value), child, depth + 1));
          obj[k] = std::move(v);
        }
        return obj;
      }
      default:
        return json(nullptr);
    }
  }

 private:
  yaml_document_t* doc_;
  ConfigDoc* out_;
};

}  // namespace

int ConfigDoc::LineOf(const std::string& pointer) const {
  std::string p = pointer;
  while (true) {
    if (auto it = lines.find(p); it != lines.end()) return it->second;
    if (p.empty()) return 0;
    auto slash = p.rfind('/');
    p = slash == std::string::npos ? "" : p.substr(0, slash);
  }
}

std::string FieldName(const std::string& pointer) {
  std::string out;
  size_t i = 0;
  while (i < pointer.size()) {
    size_t j = pointer.find('/', i + 1);
    if (j == std::string::npos) j = pointer.size();
    std::string token = pointer.substr(i + 1, j - i - 1);
    std::string decoded;
    for (size_t k = 0; k < token.size(); ++k) {
      if (token[k] == '~' && k + 1 < token.size()) {
        decoded += token[k + 1] == '1' ? '/' : '~';
        ++k;
      } else {
        decoded += token[k];
      }
    }
    const bool index =
        !decoded.empty() && decoded.find_first_not_of("0123456789") == std::string::npos;
    if (index) {
      out += "[" + decoded + "]";
    } else {
      out += (out.empty() ? "" : ".") + decoded;
    }
    i = j;
  }
  return out;
}

Status ConfigDoc::Error(const std::string& pointer, const std::string& message) const {
  const int line = LineOf(pointer);
  std::string where = path + (line > 0 ? ":" + std::to_string(line) : "");
  const std::string field = FieldName(pointer);
  return InvalidArgument(where + ": " + (field.empty() ? "" : "field " + field + ": ") + message);
}

Result<ConfigDoc> ParseConfigDoc(const std::string& text, const std::string& path) {
  ConfigDoc out;
  out.path = path;
  YamlParser parser;
  yaml_parser_set_input_string(&parser.p, reinterpret_cast<const unsigned char*>(text.data()),
                               text.size());
  YamlDocument doc;
  if (!yaml_parser_load(&parser.p, &doc.d)) {
    const auto& mark = parser.p.problem_offset ? parser.p.problem_mark : parser.p.context_mark;
    std::string problem = parser.p.problem ? parser.p.problem : "cannot parse";
    if (parser.p.context) problem = std::string(parser.p.context) + ": " + problem;
    return InvalidArgument(path + ":" + std::to_string(mark.line + 1) +
                           ": invalid YAML/JSON: " + problem);
  }
  doc.loaded = true;
  yaml_node_t* root = yaml_document_get_root_node(&doc.d);
  if (!root) return out;
  Converter conv(&doc.d, &out);
  PGSHIFT_ASSIGN_OR_RETURN(out.root, conv.Convert(root, "", 0));
  return out;
}

Result<ConfigDoc> LoadConfigDoc(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return InvalidArgument("cannot read " + path + ": " + text.status().message());
  return ParseConfigDoc(*text, path);
}

Status CheckPrivateFile(const std::string& path, const std::string& what) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return InvalidArgument("cannot read " + what + " " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(what + " " + path + " is not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return InvalidArgument(what + " " + path + " has mode " + mode +
                           "; it holds secrets, so only pgshiftd's user may read it: chmod 600 " +
                           path);
  }
  if (st.st_uid != geteuid()) {
    return InvalidArgument(what + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
                           ", not by pgshiftd's user (uid " + std::to_string(geteuid()) +
                           "); chown it");
  }
  return Status::OK();
}

}  // namespace pgshift::auth
