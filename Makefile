# The README's commands. `make test` is what CI runs; `make run` is the main job.
BUILD   ?= build
JOBS    ?= $(shell nproc)
CUDA    ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CONFIG  ?=
# Debian packages the engine needs; `make deps` installs only the missing ones.
DEB_PKGS := cmake g++ make libopenmpi-dev openmpi-bin libstb-dev libtomlplusplus-dev doctest-dev \
            zlib1g-dev libomp-dev dataset-fashion-mnist python3
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CMAKE_FLAGS := -DCMAKE_BUILD_TYPE=Release $(if $(CUDA),-DCMAKE_CUDA_COMPILER=$(CUDA) -DVIT_WITH_CUDA=ON,-DVIT_WITH_CUDA=OFF) $(EXTRA_CMAKE)

.PHONY: all deps build test run gpu-test clean
all: build

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null || \
	  { echo "error: apt-get could not install: $$missing (run 'make deps' as root or with sudo)"; exit 1; }; \
	fi

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# CPU suite: doctest unit tests, multi-rank MPI tests, end-to-end CLI tests.
test: build
	cd $(BUILD) && ctest -L cpu --output-on-failure -j $(JOBS) --timeout 900

# GPU suite: run on the GPU machine (CI has no GPU).
gpu-test:
	@test -x $(BUILD)/gpu_tests || { echo "error: $(BUILD)/gpu_tests missing: run 'make build' on a machine with nvcc"; exit 1; }
	$(BUILD)/gpu_tests

# Trains the default config: on the GPUs if there are any, else a small config on the CPU backend.
run: build
	@bash tools/run_default.sh $(BUILD) $(CONFIG)

clean:
	rm -rf $(BUILD)
