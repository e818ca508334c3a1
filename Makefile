# swucx: the two commands are `make test` and `make demo`. Everything else is a helper.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build examples test lint unit demo bench fmt clean

all: build

deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build --release

# Every example binary (target/release/examples/*).
examples: deps
	$(CARGO) build --release --examples

# Formatting, lints, then every test (unit, integration, two-process, doc).
test: deps lint unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

# Ping-pong over shm and tcp next to ucx_perftest, measured in the same run (about a minute).
demo: examples
	@scripts/bench.sh --quick

# The full benchmark matrix (median of 3 per cell; about 10 minutes). Writes target/bench/results.md.
bench: examples
	@scripts/bench.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
