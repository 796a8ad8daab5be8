# pgshiftd's web page (web/): `npm ci` from the committed package-lock.json
# into the build tree, esbuild bundles the page (web/build.cjs), and
# embed_web_assets.cmake compiles the bundle into pgshift_web_assets.
# The custom target pgshift_web carries the bundle; its PGSHIFT_NODE_MODULES
# property tells the browser test where playwright-core is.
find_program(PGSHIFT_NODE node)
find_program(PGSHIFT_NPM npm)
if(NOT PGSHIFT_NODE OR NOT PGSHIFT_NPM)
  message(FATAL_ERROR "node and npm build pgshiftd's web page; scripts/setup.sh installs them")
endif()
set(WEB_SRC ${PROJECT_SOURCE_DIR}/web)
set(WEB_BIN ${PROJECT_BINARY_DIR}/web)
# Copied at configure time, so a changed lock file re-runs cmake and npm ci.
configure_file(${WEB_SRC}/package.json ${WEB_BIN}/package.json COPYONLY)
configure_file(${WEB_SRC}/package-lock.json ${WEB_BIN}/package-lock.json COPYONLY)
add_custom_command(
  OUTPUT ${WEB_BIN}/npm-ci.stamp
  COMMAND ${PGSHIFT_NPM} ci --no-audit --no-fund --loglevel=error
  COMMAND ${CMAKE_COMMAND} -E touch ${WEB_BIN}/npm-ci.stamp
  WORKING_DIRECTORY ${WEB_BIN}
  DEPENDS ${WEB_BIN}/package.json ${WEB_BIN}/package-lock.json
  COMMENT "npm ci (web/package-lock.json)")
file(GLOB WEB_SOURCES CONFIGURE_DEPENDS ${WEB_SRC}/src/*)
set(WEB_DIST ${WEB_BIN}/dist)
add_custom_command(
  OUTPUT ${WEB_BIN}/bundle.stamp
  COMMAND ${CMAKE_COMMAND} -E rm -rf ${WEB_DIST}
  COMMAND ${CMAKE_COMMAND} -E env NODE_PATH=${WEB_BIN}/node_modules
          ${PGSHIFT_NODE} ${WEB_SRC}/build.cjs ${WEB_DIST}
  COMMAND ${CMAKE_COMMAND} -E touch ${WEB_BIN}/bundle.stamp
  DEPENDS ${WEB_BIN}/npm-ci.stamp ${WEB_SRC}/build.cjs ${WEB_SOURCES}
  COMMENT "Bundling the web page (esbuild)")
add_custom_command(
  OUTPUT ${CMAKE_CURRENT_BINARY_DIR}/web_assets_data.cc
  COMMAND ${CMAKE_COMMAND} -DROOT=${WEB_DIST} -DOUT=${CMAKE_CURRENT_BINARY_DIR}/web_assets_data.cc
          -P ${CMAKE_CURRENT_SOURCE_DIR}/embed_web_assets.cmake
  DEPENDS ${WEB_BIN}/bundle.stamp ${CMAKE_CURRENT_SOURCE_DIR}/embed_web_assets.cmake
  COMMENT "Embedding the web page")
add_custom_target(pgshift_web DEPENDS ${WEB_BIN}/bundle.stamp)
set_target_properties(pgshift_web PROPERTIES PGSHIFT_NODE_MODULES ${WEB_BIN}/node_modules)

add_library(pgshift_web_assets web_assets.cc ${CMAKE_CURRENT_BINARY_DIR}/web_assets_data.cc)
# Make generators attach a custom command to every target that needs its
# output; without this order both targets ran npm ci and the bundle at once
# and one deleted dist/ while the other embedded it.
add_dependencies(pgshift_web_assets pgshift_web)
target_link_libraries(pgshift_web_assets PUBLIC PkgConfig::HTTPLIB)
pgshift_add_test(web_assets_test SOURCES web_assets_test.cc LIBS pgshift_web_assets LABELS unit)
# The page's pure logic (timeline, formatters) under node's own test runner.
add_test(NAME web_unit_test COMMAND ${PGSHIFT_NODE} --test ${WEB_SRC}/test/unit.test.js)
set_tests_properties(web_unit_test PROPERTIES LABELS unit)
