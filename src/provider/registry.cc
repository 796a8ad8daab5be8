#include "provider/registry.h"

namespace pgshift {

Status ProviderRegistry::Register(const std::string& name, std::unique_ptr<EnvFactory> factory) {
  if (name.empty()) return InvalidArgument("a provider needs a name");
  if (!factory) return InvalidArgument("provider '" + name + "' has no factory");
  if (!factories_.emplace(name, std::move(factory)).second) {
    return AlreadyExists("provider '" + name + "' is already registered");
  }
  return Status::OK();
}

std::vector<std::string> ProviderRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, factory] : factories_) names.push_back(name);
  return names;
}

Result<std::unique_ptr<MigrationEnv>> ProviderRegistry::Make(const std::string& migration_id,
                                                             const MigrationSpec& spec) {
  auto it = factories_.find(spec.target.provider);
  if (it == factories_.end()) {
    std::string known;
    for (const auto& name : Names()) known += (known.empty() ? "" : ", ") + name;
    return InvalidArgument(
        "target.provider '" + spec.target.provider +
        "' is not available in this build (available: " + (known.empty() ? "none" : known) + ")");
  }
  return it->second->Make(migration_id, spec);
}

void ProviderRegistry::RequestStop() {
  for (auto& [name, factory] : factories_) factory->RequestStop();
}

}  // namespace pgshift
