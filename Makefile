# The two set-up commands of README.md: `make demo` and `make check`.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build demo check unit e2e-web bench-proxy bench-cutover fuzz clean format

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@$(BUILD)/src/cli/pgshift demo

check: build
	@bash scripts/check.sh $(BUILD)

bench-cutover: build
	@$(BUILD)/bench/cutover/cutover_bench

bench-proxy: build
	@BUILD=$(abspath $(BUILD)) bash bench/proxy/run.sh

# The web page in headless Chromium against a real pgshiftd (src/e2e/web_e2e_test.cc,
# web/test/e2e.cjs); screenshots in $(BUILD)/e2e-web/. Last line: E2E web {...}.
e2e-web: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target web_e2e_test
	@rc=0; $(BUILD)/src/e2e/web_e2e_test || rc=$$?; \
	  tail -n 1 $(BUILD)/e2e-web/result.txt 2>/dev/null || echo 'E2E web {"error":"the browser test did not run"}'; \
	  exit $$rc

unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

clean:
	rm -rf $(BUILD)

format:
	@find src bench -name '*.cc' -o -name '*.h' | xargs clang-format -i
