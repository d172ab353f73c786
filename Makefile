# Wraps CMake for the README's two commands: `make demo` and `make test`.
MAKEFLAGS += --no-print-directory
BUILD      ?= build
BUILD_SAN  ?= build-san
JOBS       ?= $(shell nproc)
CMAKE_FLAGS ?=
ifeq ($(KILN_WERROR),1)
CMAKE_FLAGS += -DKILN_WERROR=ON
endif

.PHONY: all deps build build-san test test-fast test-san demo clean format

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-san: deps
	@cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DKILN_SANITIZE=ON -DKILN_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD_SAN) -j $(JOBS)

# The test suite, then the same suite under ASan+UBSan.
test: build build-san
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ctest --output-on-failure -j $(JOBS)

test-fast: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

demo: build
	@scripts/demo $(BUILD)

# The course's example data sets from Fashion-MNIST, under data/ (kiln data make).
.PHONY: data
data: build
	@KILN=$(BUILD)/kiln examples/data/make_all.sh

clean:
	rm -rf $(BUILD) $(BUILD_SAN)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')
