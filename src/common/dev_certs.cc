#include "common/dev_certs.h"

#include "common/process.h"

namespace pgshift {

Status MakeDevCerts(const std::string& dir) {
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script =
      "set -e\n"
      "openssl req -x509 " + key + " -keyout ca.key -out ca.crt -days 3 -subj /CN=pgshift-dev-ca\n"
      "openssl req -x509 " + key + " -keyout evil-ca.key -out evil-ca.crt -days 3 -subj /CN=evil-ca\n"
      "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > server.ext\n"
      "sign() { openssl req " + key + " -keyout $1.key -out $1.csr -subj /CN=$2; "
      "openssl x509 -req -in $1.csr -CA $3.crt -CAkey $3.key -CAcreateserial -out $1.crt -days 3 $4; }\n"
      "sign server localhost ca '-extfile server.ext'\n"
      "sign app-client app-client ca ''\n"
      "sign other-client other-client ca ''\n"
      "sign evil-client app-client evil-ca ''\n"
      "chmod 600 *.key\n";
  return RunChecked(DefaultRunner(), {.argv = {"sh", "-c", script}, .cwd = dir, .timeout_ms = 60000})
      .status()
      .Wrap("making development certificates in " + dir);
}

}  // namespace pgshift
