// ProviderRegistry: the EnvFactory pgshiftd gives the engine. It builds each
// migration's env with the factory registered under the spec's
// target.provider ("local" today), so a new provider is one Register call.
//
// Thread-safety: Register while setting up, before the registry is shared;
// after that Make may be called from several engine workers at once.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "provider/env.h"

namespace pgshift {

class ProviderRegistry : public EnvFactory {
 public:
  // AlreadyExists when `name` is taken; InvalidArgument for an empty name or
  // a null factory.
  Status Register(const std::string& name, std::unique_ptr<EnvFactory> factory);
  // Registered names, sorted.
  std::vector<std::string> Names() const;

  // InvalidArgument naming the known providers when spec.target.provider is
  // not one of them.
  Result<std::unique_ptr<MigrationEnv>> Make(const std::string& migration_id,
                                             const MigrationSpec& spec) override;
  // Forwarded to every registered factory.
  void RequestStop() override;

 private:
  std::map<std::string, std::unique_ptr<EnvFactory>> factories_;
};

}  // namespace pgshift
