# anybit - the targets users type. CMakeLists.txt is the real build (one source list, globbed).
#
#   make          build everything (Release, tuned for this CPU; CUDA too when nvcc is found)
#   make run      install what is missing, fetch MNIST, run the main job (see README.md)
#   make test     install what is missing, build, run the test suite
#   make bench    build and run the benchmarks (docs/BENCHMARKS.md)
#   make clean    remove the build folder
#
# Variables: BUILD (build folder), CMAKE_FLAGS (e.g. -DANYBIT_CUDA=OFF -DANYBIT_PORTABLE=ON),
# JOBS (parallel compile jobs), DATA (dataset folder), RUN_ARGS (extra options for make run).
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=
DATA ?= datasets
RUN_ARGS ?=

.PHONY: all build configure deps run test bench clean

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

configure: $(BUILD)/CMakeCache.txt

build: configure
	cmake --build $(BUILD) -j $(JOBS)

deps:
	scripts/install-deps.sh

run: deps
	$(MAKE) build
	scripts/get-data.sh mnist $(DATA)/mnist
	$(BUILD)/anybit train --config configs/mnist_ours.cfg --data $(DATA)/mnist --out runs/mnist_ours $(RUN_ARGS)

test: deps
	$(MAKE) build
	$(BUILD)/anybit_tests

bench: build
	scripts/bench.sh $(BUILD)

clean:
	rm -rf $(BUILD)
