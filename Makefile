# oci-tpm-hook — build, check and test.
#
#   make demo    set up the host, build, boot the lab VM and show a container using its TPM
#   make test    format check, clippy, generated-code check, unit tests, a fuzz smoke run,
#                then every lab scenario (what CI runs)
#   make fuzz    every fuzz target for FUZZ_SECONDS (60) each (docs/FUZZING.md)
#
#   make e2e SCENARIO=baseline         one lab scenario (or a space-separated list)
#   make deb / make rpm                the packages, in target/deb and target/rpm
#   make proto   regenerate the protobuf code from the pinned tarballs ($LAB_THIRD_PARTY)
#
# The lab needs root (mmdebstrap, qemu, swtpm); see README.md, "Development".

CARGO    ?= cargo
LAB      := tests/lab
SCENARIO ?=

FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 3

.PHONY: all build check unit proto proto-check fuzz fuzz-smoke e2e test test-code lab-caches demo bench deb rpm packaging-setup lab-setup lab-roots lab-clean

all: build

# The release binaries are linked statically (glibc, not position-independent,
# as Go builds runc and containerd): a container that asks for nothing pays
# the hook's start-up, and without the dynamic loader and its relocations it
# costs about what /bin/true does (make bench); `oci-tpm-hook selftest` then
# also runs inside any image, musl or an old glibc. The flags go to the
# binaries' own link only (cargo rustc), so proc macros build as usual.
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C relocation-model=static

build:
	$(CARGO) rustc --release -p oci-tpm-hook --bin oci-tpm-hook -- $(STATIC_RUSTFLAGS)
	$(CARGO) rustc --release -p oci-tpm-hook --bin oci-tpm-runtime -- $(STATIC_RUSTFLAGS)
	$(CARGO) rustc --release -p oci-tpm-hook --bin oci-tpm-device-plugin -- $(STATIC_RUSTFLAGS)
	$(CARGO) rustc --release -p oci-tpm-hook --bin oci-tpm-systemd -- $(STATIC_RUSTFLAGS)

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy -p protogen --all-targets -- -D warnings
	$(CARGO) clippy -p oci-tpm-hook-fuzz --all-targets -- -D warnings

unit:
	$(CARGO) test

# The NRI and ttrpc messages (src/frontend/nri/generated/) and the kubelet's
# device plugin API (src/frontend/device_plugin/generated/) are generated from
# the .proto files in the pinned CRI-O and Kubernetes tarballs, looked for in
# $LAB_THIRD_PARTY (default ../shared/third_party). proto-check regenerates
# them into a temporary directory and fails if the checked-in code differs;
# without a tarball its check is skipped with a warning, except under CI=true.
proto:
	CARGO="$(CARGO)" tools/protogen/proto.sh write

proto-check:
	CARGO="$(CARGO)" tools/protogen/proto.sh check

# Coverage-guided fuzzing of every parser of untrusted input (libFuzzer on
# stable Rust; docs/FUZZING.md). A crash fails the run and names the input.
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) CARGO=$(CARGO) fuzz/run.sh

# A few seconds per target: the seeds and what a short search finds.
fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS) CARGO=$(CARGO) fuzz/run.sh

# Host tools for the lab (installs only what is missing, and says what).
lab-setup:
	$(LAB)/setup-host.sh

# Build (or reuse) the cached guest root and container image.
lab-roots: lab-setup
	$(LAB)/build-guest-root.sh >/dev/null
	$(LAB)/build-image.sh >/dev/null

# The packages scenario installs the .deb and reads the rpm back, so they
# are built (from the same binaries) first.
e2e: lab-setup build deb rpm
	$(LAB)/run.sh $(SCENARIO)

# The code's checks and builds in order, stopping at the first failure;
# beside them the lab's cached builds (guest root, image, CRI-O and
# Kubernetes), which with an empty cache are mostly downloading and
# unpacking; then every lab scenario. The host tools first: both sides
# would otherwise install packages at once.
test: lab-setup packaging-setup
	$(MAKE) -j test-code lab-caches
	$(MAKE) e2e

test-code:
	$(MAKE) check
	$(MAKE) proto-check
	$(MAKE) unit
	$(MAKE) fuzz-smoke
	$(MAKE) deb
	$(MAKE) rpm

lab-caches: lab-setup
	$(LAB)/build-caches.sh $(LAB)/out/build-caches.log

demo: lab-setup build
	$(LAB)/run.sh demo

# Tools the packages need (binutils, rpm), installed when missing.
packaging-setup:
	packaging/setup-host.sh

# A Debian package of the release binaries (stripped), hooks.d file, policy,
# systemd unit, udev rule, man pages and completions; checked as it is built.
deb: build packaging-setup
	packaging/deb/build.sh

# The same as an rpm, read back with rpm -qlp and rpm -qp --scripts.
rpm: build packaging-setup
	packaging/rpm/build.sh

# Speed and memory, measured on this host and in the lab (see tests/bench/run.sh).
# The device plugin is measured against a stand-in kubelet, a cargo example
# (examples/device_plugin_bench.rs) that the lab stages when it is built.
bench: lab-setup build
	$(CARGO) rustc --release -p oci-tpm-hook --example device_plugin_bench -- $(STATIC_RUSTFLAGS)
	tests/bench/run.sh

# Remove the cached guest roots and images (they are rebuilt on the next run).
lab-clean:
	rm -rf --one-file-system "$${LAB_CACHE:-/var/cache/oci-tpm-hook/lab}"
