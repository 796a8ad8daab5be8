# Writes OUT: a C++ source holding every file under ROOT (the bundled web
# page) as pgshift::api::kEmbeddedWebFiles (see web_assets.h). Same technique
# as src/proxy/splice/embed.cmake, for a tree of files.
file(GLOB_RECURSE files RELATIVE "${ROOT}" "${ROOT}/*")
list(SORT files)
set(arrays "")
set(entries "")
set(i 0)
foreach(rel ${files})
  file(READ "${ROOT}/${rel}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR size "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  # A trailing 0 keeps empty files legal C++ (size says where the file ends).
  string(APPEND arrays "const unsigned char kFile${i}[] = {${bytes}0};\n")
  string(APPEND entries "    {\"${rel}\", kFile${i}, ${size}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}.tmp"
  "// Generated from the bundled web page by embed_web_assets.cmake; do not edit.\n"
  "#include \"api/web_assets.h\"\n"
  "namespace pgshift::api {\nnamespace {\n${arrays}}  // namespace\n"
  "extern const EmbeddedWebFile kEmbeddedWebFiles[] = {\n${entries}};\n"
  "extern const size_t kEmbeddedWebFileCount = ${i};\n"
  "}  // namespace pgshift::api\n")
file(RENAME "${OUT}.tmp" "${OUT}")
