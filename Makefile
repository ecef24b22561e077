# Quire — see README.md.
SHELL       := /bin/bash
GO          ?= go
BIN         := bin
TOOLS       := $(CURDIR)/.tools
STATICCHECK := $(TOOLS)/staticcheck
STATICCHECK_VERSION := v0.8.2
TEST_TIMEOUT ?= 25m
PKGS        := ./...

.PHONY: all build test test-unit lint fmt deps demo demo-down demo-status chaos clean proto bench ansible-lint ansible-test

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/quire-manager ./cmd/manager
	$(GO) build -o $(BIN)/quire-agent ./cmd/agent
	$(GO) build -o $(BIN)/quire ./cmd/quire

deps:
	@scripts/deps.sh

# Unit and integration tests. Integration tests start real mariadbd
# processes on loopback ports; `deps` installs MariaDB when run as root.
test: deps
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

# Pure tests only: skips anything that needs MariaDB or Docker.
test-unit:
	$(GO) test -count=1 -short $(PKGS)

$(STATICCHECK):
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

lint: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)

fmt:
	gofmt -w $$(git ls-files '*.go')

# A local three-node sandbox on fixed loopback ports, data in .demo/.
demo: deps build
	@scripts/demo.sh up

demo-down:
	@scripts/demo.sh down

demo-status:
	@scripts/demo.sh status

# The chaos test (docs/chaos.md): a sandbox like the demo's in .chaos/ (on
# the demo's ports, so not while a demo runs), 8 writers, 60 random faults
# over 3 minutes, then every node must converge within 60 s. Flags go in
# CHAOS_FLAGS, e.g. make chaos CHAOS_FLAGS="-faults 30 -duration 90s -seed 7".
CHAOS_FLAGS ?=
chaos: deps build
	$(GO) build -o $(BIN)/chaos ./chaos
	$(BIN)/chaos $(CHAOS_FLAGS)

# Static checks of deploy/ansible (Debian packages ansible, ansible-lint).
ansible-lint:
	@QUIRE_DEPS_ANSIBLE=1 scripts/deps.sh
	deploy/ansible/test/lint.sh

# Deploys a three-node cluster with deploy/ansible into Docker containers
# (root; about 8 minutes, plus 4 the first time for the base image).
ansible-test:
	@QUIRE_DEPS_ANSIBLE=1 scripts/deps.sh
	deploy/ansible/test/docker.sh

# Regenerates the gRPC code under api/ (committed; CI does not need protoc).
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
proto:
	@command -v protoc >/dev/null || { echo "proto: protoc missing: apt-get install -y protobuf-compiler"; exit 1; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	for f in $$(git ls-files 'api/*.proto'); do \
	  PATH=$(TOOLS):$$PATH protoc -I $$(dirname $$f) --go_out=$$(dirname $$f) --go_opt=paths=source_relative \
	    --go-grpc_out=$$(dirname $$f) --go-grpc_opt=paths=source_relative $$f || exit 1; done

clean: demo-down
	@QUIRE_DEMO_DIR=$(CURDIR)/.chaos scripts/demo.sh down >/dev/null
	rm -rf $(BIN) $(TOOLS)
