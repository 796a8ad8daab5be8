# The two set-up commands of README.md: `make demo` and `make check`.
BUILD ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build demo check unit e2e-cdc e2e-faults e2e-regress e2e-rollback e2e-web \
	bench-proxy bench-cutover bench-fleet fuzz clean format

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@$(BUILD)/src/cli/pgshift demo

check: build
	@bash scripts/check.sh $(BUILD)

# $(call e2e,NAME,COMMAND): runs an end-to-end test binary and prints its
# `E2E NAME {...}` line last (again, after gtest's summary); a failed test
# fails the target.
define e2e
	@log=$(abspath $(BUILD))/e2e-$(1).log; \
	{ $(2); echo $$? > $$log.rc; } 2>&1 | tee $$log; \
	rc=$$(cat $$log.rc); line=$$(grep '^E2E $(1) ' $$log | tail -n 1); \
	if [ -z "$$line" ]; then echo "e2e-$(1): no E2E $(1) line (see $$log)"; exit 1; fi; \
	echo "$$line"; exit $$rc
endef

# The CDC end-to-end tests alone.
e2e-cdc: build
	$(call e2e,cdc,$(BUILD)/src/e2e/cdc_e2e_test)

# Rollback after writes on the target (reverse replication) alone.
e2e-rollback: build
	$(call e2e,rollback,$(BUILD)/src/e2e/rollback_e2e_test)

bench-cutover: build
	@$(BUILD)/bench/cutover/cutover_bench

# N small clusters (default 400; FLEET_ARGS="-n 50" runs it small) under a
# light ledger load through one pgshift-proxy, migrated in waves by one
# pgshiftd; bench/fleet/README.md. Last line: `BENCH fleet {...}`.
FLEET_ARGS ?=
bench-fleet: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target fleet_bench pgshiftd pgshift-proxy
	@$(BUILD)/bench/fleet/fleet_bench $(FLEET_ARGS)

bench-proxy: build
	@BUILD=$(abspath $(BUILD)) bash bench/proxy/run.sh

# The fault matrix: pgshiftd crashed at every phase boundary, the other fault
# families (src/e2e/CMakeLists.txt) and the bad requests; the last line is
# `E2E faults {"scenarios":N,...}`.
E2E_FAULTS_REPORT = $(abspath $(BUILD))/e2e-faults.txt
e2e-faults: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target faults_e2e_test pgshiftd pgshift-proxy
	@rm -f $(E2E_FAULTS_REPORT)
	@start=$$(date +%s); \
	  PGSHIFT_E2E_FAULTS_REPORT=$(E2E_FAULTS_REPORT) $(BUILD)/src/e2e/faults_e2e_test \
	    --gtest_filter='-FaultsE2E.Crash*'; rc=$$?; \
	  echo "e2e-faults: $$(( $$(date +%s) - start )) s"; \
	  if [ -s $(E2E_FAULTS_REPORT) ]; then cat $(E2E_FAULTS_REPORT); \
	  else echo 'E2E faults {"error":"no report written"}'; rc=1; fi; \
	  exit $$rc

# PostgreSQL 15's own regression suite (Debian's source, fetched by setup) with
# pg_regress --use-existing: directly, through pgshift-proxy (plain, mTLS) and
# through it while pgshiftd migrates the database mid-suite; each mode's
# output (regression.diffs) in $(BUILD)/e2e-regress/<mode>. Last line:
# `E2E regress {"tests":N,...,"proxy_only_failures":[...]}`.
e2e-regress: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target regress_e2e_test
	@start=$$(date +%s); \
	  log=$(abspath $(BUILD))/e2e-regress.log; \
	  { PGSHIFT_E2E_REGRESS_OUT=$(abspath $(BUILD))/e2e-regress \
	    $(BUILD)/src/e2e/regress_e2e_test; echo $$? > $$log.rc; } 2>&1 | tee $$log; \
	  rc=$$(cat $$log.rc); echo "e2e-regress: $$(( $$(date +%s) - start )) s"; \
	  line=$$(grep '^E2E regress ' $$log | tail -n 1); \
	  if [ -z "$$line" ]; then echo "e2e-regress: no E2E regress line (see $$log)"; exit 1; fi; \
	  echo "$$line"; exit $$rc

# The web page in headless Chromium against a real pgshiftd (src/e2e/web_e2e_test.cc
# driving web/test/e2e.cjs); screenshots kept in $(BUILD)/e2e-web/screenshots.
e2e-web: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target web_e2e_test
	$(call e2e,web,$(BUILD)/src/e2e/web_e2e_test)

unit: build
	@cd $(BUILD) && ctest -L unit --output-on-failure

clean:
	rm -rf $(BUILD)

format:
	@find src bench -name '*.cc' -o -name '*.h' | xargs clang-format -i
