# Sourced by run.sh and tls_syscalls.sh: make_bench_certs DIR writes a test
# CA, a server certificate for 127.0.0.1 (CN localhost) and a client
# certificate (CN bench-client, the identity the proxy's policy names), all
# ECDSA P-256, keys mode 600.
make_bench_certs() {
  (
    cd "$1"
    K="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    openssl req -x509 $K -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
    openssl req $K -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
    openssl req $K -keyout client.key -out client.csr -subj /CN=bench-client 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 2>/dev/null
    chmod 600 ./*.key
  )
}
