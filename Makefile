# The two set-up commands of README.md: `make demo` and `make check`.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build demo check unit e2e-cdc bench-proxy bench-cutover fuzz clean format

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@$(BUILD)/src/cli/pgshift demo

check: build
	@bash scripts/check.sh $(BUILD)

# The CDC end-to-end tests alone; their `E2E cdc {...}` line is printed last
# (again, after gtest's summary), and a failed test fails the target.
e2e-cdc: build
	@log=$(abspath $(BUILD))/e2e-cdc.log; \
	{ $(BUILD)/src/e2e/cdc_e2e_test; echo $$? > $$log.rc; } 2>&1 | tee $$log; \
	rc=$$(cat $$log.rc); line=$$(grep '^E2E cdc ' $$log | tail -n 1); \
	if [ -z "$$line" ]; then echo "e2e-cdc: no E2E cdc line (see $$log)"; exit 1; fi; \
	echo "$$line"; exit $$rc

bench-cutover: build
	@$(BUILD)/bench/cutover/cutover_bench

bench-proxy: build
	@BUILD=$(abspath $(BUILD)) bash bench/proxy/run.sh

unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

clean:
	rm -rf $(BUILD)

format:
	@find src bench -name '*.cc' -o -name '*.h' | xargs clang-format -i
