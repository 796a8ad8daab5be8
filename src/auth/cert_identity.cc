#include "auth/cert_identity.h"

#include <openssl/x509v3.h>

namespace pgshift::auth {

std::vector<std::string> CertIdentities(X509* cert) {
  std::vector<std::string> ids;
  char cn[256];
  int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
  if (n > 0) ids.emplace_back(cn, static_cast<size_t>(n));
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names) {
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
      const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
      const ASN1_IA5STRING* s = nullptr;
      if (gn->type == GEN_DNS) {
        s = gn->d.dNSName;
      } else if (gn->type == GEN_EMAIL) {
        s = gn->d.rfc822Name;
      } else if (gn->type == GEN_URI) {
        s = gn->d.uniformResourceIdentifier;
      }
      if (s) {
        ids.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<size_t>(ASN1_STRING_length(s)));
      }
    }
    GENERAL_NAMES_free(names);
  }
  return ids;
}

std::vector<std::string> VerifiedPeerNames(const SSL* ssl) {
  if (!ssl || SSL_get_verify_result(ssl) != X509_V_OK) return {};
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return {};
  auto ids = CertIdentities(cert);
  X509_free(cert);
  return ids;
}

}  // namespace pgshift::auth
