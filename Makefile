# The two set-up commands of README.md: `make demo` and `make check`.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build demo check unit bench-proxy bench-cutover fuzz clean format

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

unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

clean:
	rm -rf $(BUILD)

format:
	@find src bench -name '*.cc' -o -name '*.h' | xargs clang-format -i
