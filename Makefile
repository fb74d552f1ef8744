# entra-sync: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing (protoc, the Temporal CLI, Postgres) and says what it does.

.PHONY: demo test bench stop check fmt clippy tools

demo:
	@bash deploy/scripts/demo.sh

test:
	@bash deploy/scripts/test.sh

bench:
	@bash deploy/scripts/bench.sh

stop:
	@bash deploy/scripts/stop.sh

tools:
	@bash -c 'source deploy/scripts/lib.sh && ensure_tools'

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

# What CI runs, plus the lints.
check: fmt clippy test
