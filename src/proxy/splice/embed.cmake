# Writes OUT: a C++ source that holds the bytes of IN as kPgSpliceBpfObject.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR size "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}" "// Generated from pg_splice.bpf.o by embed.cmake; do not edit.\n#include <cstddef>\nnamespace pgshift::proxy {\nextern const unsigned char kPgSpliceBpfObject[] = {${bytes}};\nextern const size_t kPgSpliceBpfObjectSize = ${size};\n}  // namespace pgshift::proxy\n")
