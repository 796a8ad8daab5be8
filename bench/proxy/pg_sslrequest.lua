-- HAProxy cannot answer PostgreSQL's SSLRequest (libpq before 17 always
-- sends it before TLS), so it cannot terminate a PostgreSQL client's TLS by
-- itself. This action, on a plain TCP frontend, consumes the 8-byte
-- SSLRequest and answers 'S'; the frontend then passes the client's TLS
-- handshake on to a TLS frontend of the same HAProxy (bench/proxy/run.sh).
local SSL_REQUEST = "\0\0\0\8\4\210\22\47"  -- length 8, code 80877103

core.register_action("pg_sslrequest", { "tcp-req" }, function(txn)
  if txn.req:data(0, 8) == SSL_REQUEST then
    txn.req:remove(0, 8)
    txn.res:send("S")
  end
end)
