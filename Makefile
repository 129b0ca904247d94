# Environment Fabric — build, run and test.
#
#   make run     start the single-host fabric (agent + control plane) on this machine
#   make fleet   start a local fleet: PostgreSQL, two control planes, three agents, on loopback
#   make test    everything CI checks: generated code up to date, go vet, go test (with a 30 s chaos run)
#   make chaos   fault-injection run against a local fleet (CHAOS_SECONDS=120); report in data/chaos/
#   make bench   benchmarks; writes docs/benchmarks.md and docs/bench/ (not part of make test)
#   make scale   a million simulated environments and 200 gossip members, measured (not part of make test)
#
# Tools the build needs (uv, buf, protoc plugins; the SDK tests' Python tools) are installed under .tools/, pinned.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO        ?= go
TOOLS     := $(CURDIR)/.tools
TOOLS_BIN := $(TOOLS)/bin
UV_BIN    := $(TOOLS)/uv/bin/uv

# buf is pinned here; the protoc plugins follow the versions of their runtimes in go.mod, so the
# generated code always matches the library it is compiled against.
BUF_VERSION := v1.75.0
PROTO_GEN   := proto/gen

.PHONY: help
help: ## show this help
	@echo "Environment Fabric. Usage: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build ./bin/controlplane, ./bin/agent with ./bin/envfabric-sandbox (its run sandbox, C), ./bin/envfabric-ca (the fleet's certificates) and ./bin/envfabric (the CLI)
	$(GO) build -o bin/ ./controlplane/cmd/controlplane ./agent/cmd/agent ./controlplane/cmd/envfabric-ca ./client/cmd/envfabric
	bash agent/sandbox/stage/build.sh bin/envfabric-sandbox

.PHONY: uv
uv: ## install the pinned uv into .tools/uv
	@bash scripts/install-uv.sh >/dev/null

# The Python SDK's tests (controlplane/e2e/pysdk_test.go) use these: mypy, pytest,
# openapi-python-client and langgraph, pinned in clients/python/tools-requirements.txt.
.PHONY: pytools
pytools: ## install the pinned Python tools of the SDK's tests into .tools/pytools
	@bash scripts/install-pytools.sh >/dev/null

.PHONY: run
run: ## run agent + control plane on this host (data in ./data; Ctrl-C stops)
	bash scripts/run.sh

.PHONY: fleet
fleet: ## run a local fleet: PostgreSQL, 2 control planes, 3 agents on loopback (data in ./data/fleet)
	bash scripts/fleet.sh

.PHONY: test
test: uv pytools checkgenerate sandbox-tier ## check generated code, go vet, go test (what CI runs)
	$(GO) vet ./...
	UV_BIN=$(UV_BIN) $(GO) test -count=1 -timeout 45m ./...

# Says which run sandbox tier this machine allows (docs/sandbox.md); with CI=true it fails unless
# the strongest (namespace) is available, since CI runs on the same kind of machine as production.
.PHONY: sandbox-tier
sandbox-tier: ## print the strongest run sandbox tier this machine allows, the syscall filter and the cgroup
	@$(GO) test -count=1 -run '^TestTierAvailable$$' -v ./agent/sandbox/ | grep -E 'sandbox tier|SANDBOX TIER|SYSCALL FILTER|WHOLE-RUN CGROUP|^(--- |FAIL|ok)'

# The harness (scripts/chaos) builds the programs, starts PostgreSQL, a local package index, two
# control planes and three agents, and injects faults while clients work; its last line is the
# verdict and it exits non-zero on any invariant violation. make test runs it for 30 s as
# TestChaos in ./scripts/chaos (skipped by go test -short).
CHAOS_SECONDS ?= 120

.PHONY: chaos
chaos: uv ## fault-injection run: kill/pause programs, stop PostgreSQL, check invariants (CHAOS_SECONDS=120)
	UV_BIN=$(UV_BIN) CHAOS_SECONDS=$(CHAOS_SECONDS) $(GO) run ./scripts/chaos

.PHONY: bench
bench: uv ## run the benchmarks (~15 min; BENCH_QUICK=1 for a short run) into docs/benchmarks.md
	UV_BIN=$(UV_BIN) $(GO) run ./scripts/bench
	$(GO) run ./scripts/benchdeps

# scripts/scale fills PostgreSQL and SQLite with SCALE_ENVS synthetic environments (a million by
# default; SCALE_ENVS=100000 for a quick run) and measures the API, cleanup, storage calls,
# database size, gossip convergence and memory; docs/scale.md carries its figures.
.PHONY: scale
scale: uv ## simulate a million environments and 200 gossip members; print figures and goals (SCALE_ENVS=1000000)
	UV_BIN=$(UV_BIN) $(GO) run ./scripts/scale

.PHONY: proto
proto: ## install the pinned generators and regenerate proto/gen
	@protobuf_version=$$($(GO) list -m -f '{{.Version}}' google.golang.org/protobuf); \
	connect_version=$$($(GO) list -m -f '{{.Version}}' connectrpc.com/connect); \
	echo "generators: buf $(BUF_VERSION), protoc-gen-go $$protobuf_version, protoc-gen-connect-go $$connect_version"; \
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION); \
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$$protobuf_version; \
	GOBIN=$(TOOLS_BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$$connect_version
	@# Start from empty so files whose .proto is gone disappear too (checkgenerate then sees it).
	rm -rf $(PROTO_GEN)
	PATH="$(TOOLS_BIN):$$PATH" $(TOOLS_BIN)/buf generate --template proto/buf.gen.yaml

# Regenerates, then compares with what git has. In CI the generated code is committed, so any
# modified, deleted or untracked file under proto/gen means someone forgot `make proto`.
# Before proto/gen is first committed there is nothing to compare with: outside CI that is a
# warning, in CI (CI=true) a failure.
.PHONY: checkgenerate
checkgenerate: proto ## fail if proto/gen differs from the committed code
	@if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		echo "checkgenerate: not a git work tree; nothing to compare with, skipped"; \
	elif [[ -z "$$(git ls-files -- $(PROTO_GEN))" ]]; then \
		if [[ "$${CI:-}" == true ]]; then \
			echo "checkgenerate: $(PROTO_GEN) is not committed; generated code must be committed (run make proto, commit $(PROTO_GEN))" >&2; \
			exit 1; \
		fi; \
		echo "checkgenerate: warning: $(PROTO_GEN) is not committed yet, nothing to compare with; commit it"; \
	elif [[ -n "$$(git status --porcelain --untracked-files=all -- $(PROTO_GEN))" ]]; then \
		echo "checkgenerate: $(PROTO_GEN) is stale: regenerating changed these files:" >&2; \
		git status --porcelain --untracked-files=all -- $(PROTO_GEN) >&2; \
		git --no-pager diff --stat -- $(PROTO_GEN) >&2; \
		echo "Run 'make proto' and commit $(PROTO_GEN)." >&2; \
		exit 1; \
	else \
		echo "checkgenerate: $(PROTO_GEN) is up to date"; \
	fi

.PHONY: fmt
fmt: ## gofmt all Go code
	$(GO) fmt ./...

.PHONY: vet
vet: ## go vet all Go code
	$(GO) vet ./...

.PHONY: clean
clean: ## remove built binaries and test output (keeps .tools and data)
	rm -rf bin/ coverage.out coverage.html *.coverprofile

.PHONY: distclean
distclean: clean ## also remove the installed tools (.tools)
	rm -rf $(TOOLS)
