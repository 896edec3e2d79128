# sluice — build, run and test. `make run` and `make test` are the contract
# with a new user (see README.md).

GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PLUGINS  := ineo hellorf spotify

.PHONY: all build run test proto clean

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/sluiced ./cmd/daemon
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/sluicectl ./cmd/ctl
	@for p in $(PLUGINS); do \
		echo "$(GO) build -o $(BIN)/sluice-$$p ./plugins/$$p"; \
		$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/sluice-$$p ./plugins/$$p || exit 1; \
	done

# Sandbox mode: the real daemon, plugins, scheduler and cache against
# built-in simulators of the upstreams. In another shell:
#   bin/sluicectl status
#   bin/sluicectl ineo track 6fx5VOjqYNBHcDf5GIF5g5
run: build
	$(BIN)/sluiced --sandbox --config $(or $(CONFIG),config.toml)

# Every test, with the race detector. Integration tests build their own
# race-enabled binaries of the daemon and plugins into a temporary directory.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

# Regenerate the plugin RPC code (needs protoc, protoc-gen-go and
# protoc-gen-go-grpc; the generated code is committed).
proto:
	cd core/proto && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative sluice.proto

clean:
	rm -rf $(BIN)
