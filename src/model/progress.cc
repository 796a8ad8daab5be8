#include "model/progress.h"

#include "model/json_fields.h"

namespace pgshift {

Result<MigrationProgress> MigrationProgress::FromJson(const nlohmann::json& j) {
  auto r = json_fields::ReadRecord<MigrationProgress>(j);
  if (!r.ok()) return r.status().Wrap("progress");
  return r;
}

nlohmann::json MigrationProgress::ToJson() const { return json_fields::WriteRecord(*this); }

Result<MigrationResult> MigrationResult::FromJson(const nlohmann::json& j) {
  auto r = json_fields::ReadRecord<MigrationResult>(j);
  if (!r.ok()) return r.status().Wrap("result");
  return r;
}

nlohmann::json MigrationResult::ToJson() const { return json_fields::WriteRecord(*this); }

}  // namespace pgshift
