# Thin wrapper over CMake. `make` builds Release into build/ (CLI at build/bin/sppft),
# `make test` builds and runs every test through ctest, `make demo` runs the demo.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo bench sanitize clean

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

# The C++ under AddressSanitizer and UBSan, any finding fatal (build-sanitize/, no CUDA): the
# malformed-input and damaged-output mutations at 3000 per file kind, then every engine, kernels,
# models, trainer, analysis and CLI test. Not part of `make test`: it is a second full build.
SANITIZE_BUILD ?= build-sanitize
SANITIZE_TESTS = allocator_test chat_template_test malformed_input_test malformed_outputs_test prompts_test safetensors_test tokenizer_test \
	ops_test backward_test optimizer_test config_test model_test recompute_test dataset_test trainer_test \
	attack_sets_test profile_test distributed_test analysis_test experiment_test rouge_test svg_test cli_test
sanitize:
	@bash scripts/install-deps.sh --python
	cmake -S . -B $(SANITIZE_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DSPPFT_CUDA=OFF -DSPPFT_SANITIZE=ON \
		-DSPPFT_VENV_PYTHON=$(CURDIR)/build/pyenv/bin/python
	cmake --build $(SANITIZE_BUILD) -j $(JOBS) --target sppft $(SANITIZE_TESTS)
	cd $(SANITIZE_BUILD) && SPPFT_FUZZ_ITERATIONS=3000 OMP_WAIT_POLICY=PASSIVE ctest --output-on-failure -j $(JOBS) \
		-R '^(engine|kernels|models|trainer|analysis|cli)\.[a-z_]*_test$$' -E '^trainer\.distributed_test$$'
	# Open MPI leaks at exit in its own libraries and components: those are suppressed
	# (tests/lsan-mpi.supp), with full stacks and components kept loaded so the frames have names.
	cd $(SANITIZE_BUILD) && OMP_WAIT_POLICY=PASSIVE ASAN_OPTIONS=fast_unwind_on_malloc=0 \
		LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan-mpi.supp:print_suppressions=0 \
		OMPI_MCA_mca_base_component_disable_dlclose=1 ctest --output-on-failure -R '^trainer\.distributed_test$$'

clean:
	rm -rf $(BUILD)
