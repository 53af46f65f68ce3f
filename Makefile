# The two commands that matter: `make up` runs the whole pipeline here, `make test` runs every test.
.PHONY: up test deps fmt lint deny deploy-check secure-certs unit fuzz bench clean

CARGO ?= cargo

up:
	scripts/install-deps.sh --run-only
	scripts/up.sh

test: deps fmt lint deny deploy-check unit

deps:
	scripts/install-deps.sh

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Licenses, bans and sources are checked offline; advisories need the RustSec database, which no
# package registry here ships (see docs/development.md).
deny:
	$(CARGO) deny --offline check licenses bans sources

# docker-compose.yml, deploy/kubernetes, the alert rules and the Grafana dashboard, offline.
deploy-check:
	node deploy/check/validate.mjs

unit:
	scripts/test.sh

# A dev CA, certificates, passwords and tokens in deploy/secure/generated/ (gitignored), for
# docker-compose.secure.yml and deploy/secure/ (docs/security.md).
secure-certs:
	scripts/secure-certs.sh

# The long fuzzing run: every decoder property (common/, collector/ and ingester/tests/fuzz.rs) with
# FUZZ_CASES cases each instead of `make test`'s 256; one summary line per property
# (docs/development.md, "Fuzzing").
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p spanline-common -p spanline-collector -p spanline-ingester --test fuzz -- --nocapture
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p spanline-collector --test zipkin --test jaeger_thrift -- --nocapture

# Each stage alone, then the whole pipeline, on this machine; results in bench/results.json
# (BENCHMARKS.md explains them). Criterion: cargo bench -p spanline-collector / -p spanline-ingester.
bench:
	scripts/bench.sh

clean:
	rm -rf .run
