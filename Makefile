# Thin wrapper over CMake. `make` builds Release into build/ (CLI at build/bin/sppft),
# `make test` builds and runs every test through ctest, `make demo` runs the demo.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo bench clean

all: build

deps:
	@bash scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	@bash scripts/install-deps.sh
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	@bash scripts/install-deps.sh --python
	cmake --build $(BUILD) -j $(JOBS) --target emudev_tests
	# Two tests share the cores: OpenMP threads that spin while they wait would starve the other
	# test (recompute_test: 2.4 s alone, 20.5 s next to one busy process, 3.2 s with PASSIVE).
	cd $(BUILD) && OMP_WAIT_POLICY=PASSIVE ctest --output-on-failure -j $(JOBS)

demo: build
	$(BUILD)/bin/sppft demo --out demo-out

bench: build
	@bash scripts/install-deps.sh --python
	bash bench/cpu_bench.sh

clean:
	rm -rf $(BUILD)
