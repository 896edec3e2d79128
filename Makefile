# sluice — build, run and test. `make run` and `make test` are the contract
# with a new user (see README.md).

GO       ?= go
BIN      ?= bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
PLUGINS  := ineo hellorf spotify

PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= /etc
BINDIR      = $(PREFIX)/bin
PLUGINDIR   = $(PREFIX)/lib/sluice/plugins
UNITDIR     = $(PREFIX)/lib/systemd/system
# share/, not lib/: systemd's user manager searches $XDG_DATA_HOME and
# $XDG_DATA_DIRS (~/.local/share, /usr/local/share, /usr/share), so a
# PREFIX of ~/.local works too.
USERUNITDIR = $(PREFIX)/share/systemd/user
SYSUSERSDIR = $(PREFIX)/lib/sysusers.d
TMPFILESDIR = $(PREFIX)/lib/tmpfiles.d

FUZZTIME ?= 30s

.PHONY: all build run test proto clean install install-files uninstall fuzz man soak bench

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
# CONFIG=, SOCKET= and STATE_DIR= choose the config, socket and state dir
# (a second sandbox needs its own socket and state dir); RESET=1 empties
# the sandbox's state first.
run: build
	$(BIN)/sluiced --sandbox --config $(or $(CONFIG),config.toml) \
		$(if $(SOCKET),--socket $(SOCKET)) $(if $(STATE_DIR),--state-dir $(STATE_DIR)) $(if $(RESET),--reset)

# Every test, with the race detector. Integration tests build their own
# race-enabled binaries of the daemon and plugins into a temporary directory.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	# The fast lane's raw socket I/O is left out of race builds (see
	# core/api/rawio_linux.go): its package runs once more without -race.
	$(GO) test -count=1 ./core/api/

# Benchmarks against the targets and peers (bare Go server, nginx
# proxy_cache); about 4 minutes; prints a Markdown table and writes
# bench/RESULTS.md. Installs Debian's nginx-light if missing (needs root).
bench:
	$(GO) run ./bench $(BENCHFLAGS)

# Man pages: sluicectl's whole command tree (man/man1), sluiced(8) from its
# flags and sluice.toml(5) from config.toml, the config reference.
man: build
	$(BIN)/sluicectl gen-man man/man1
	$(BIN)/sluicectl gen-man-ref config.toml man

# The long chaos run (two minutes of mixed load with plugin kills and
# config rewrites); make test runs a 20-second version.
soak:
	SLUICE_CHAOS=2m $(GO) test -race -count=1 -timeout 30m -run 'Chaos' -v ./internal/e2e/

# Run every fuzz target for FUZZTIME each (their seed corpora already run
# in make test).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run=NONE -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

# Regenerate the plugin RPC code (needs protoc, protoc-gen-go and
# protoc-gen-go-grpc; the generated code is committed).
proto:
	cd core/proto && protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative sluice.proto

# Install binaries, plugins, units and (only if none exists) the example
# config. Honours PREFIX (default /usr/local), DESTDIR and SYSCONFDIR.
# sluiced finds its plugins in $(PREFIX)/lib/sluice/plugins by itself.
install: build
	$(MAKE) install-files

# install-files installs what is already in $(BIN) (tests use it with
# prebuilt binaries).
install-files:
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(USERUNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/sluice
	install -m 0755 $(BIN)/sluiced $(BIN)/sluicectl $(DESTDIR)$(BINDIR)/
	@for p in $(PLUGINS); do install -m 0755 $(BIN)/sluice-$$p $(DESTDIR)$(PLUGINDIR)/ || exit 1; done
	@for u in sluice.service sluice.socket; do \
		sed -e 's|/usr/local/bin|$(BINDIR)|g' -e 's|/etc/sluice|$(SYSCONFDIR)/sluice|g' systemd/$$u > $(DESTDIR)$(UNITDIR)/$$u; \
		sed -e 's|/usr/local/bin|$(BINDIR)|g' systemd/user/$$u > $(DESTDIR)$(USERUNITDIR)/$$u; \
	done
# The optional loopback TCP listener: installed, not enabled (enable it
# beside sluice.socket to use it). System units only: one port per host.
	install -m 0644 systemd/sluice-http.socket $(DESTDIR)$(UNITDIR)/sluice-http.socket
	install -m 0644 systemd/sluice.sysusers $(DESTDIR)$(SYSUSERSDIR)/sluice.conf
	install -m 0644 systemd/sluice.tmpfiles $(DESTDIR)$(TMPFILESDIR)/sluice.conf
	install -d $(DESTDIR)$(PREFIX)/share/man/man1
	$(BIN)/sluicectl gen-man $(DESTDIR)$(PREFIX)/share/man/man1
	$(BIN)/sluicectl gen-man-ref config.toml $(DESTDIR)$(PREFIX)/share/man
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/sluice/config.toml ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/sluice/config.toml"; \
	else \
		install -m 0640 config.toml $(DESTDIR)$(SYSCONFDIR)/sluice/config.toml; \
		if [ -z "$(DESTDIR)" ] && getent group sluice >/dev/null 2>&1; then \
			chgrp sluice $(SYSCONFDIR)/sluice/config.toml; \
		else \
			echo "note: the service runs as user sluice: chgrp sluice $(SYSCONFDIR)/sluice/config.toml once the group exists"; \
		fi; \
	fi

# Remove what install put in place, except the config (it may hold your
# settings) and the state directory.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/sluiced $(DESTDIR)$(BINDIR)/sluicectl
	@for p in $(PLUGINS); do rm -f $(DESTDIR)$(PLUGINDIR)/sluice-$$p; done
	-rmdir $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(PREFIX)/lib/sluice 2>/dev/null
	rm -f $(DESTDIR)$(UNITDIR)/sluice.service $(DESTDIR)$(UNITDIR)/sluice.socket $(DESTDIR)$(UNITDIR)/sluice-http.socket
	rm -f $(DESTDIR)$(USERUNITDIR)/sluice.service $(DESTDIR)$(USERUNITDIR)/sluice.socket
	rm -f $(DESTDIR)$(SYSUSERSDIR)/sluice.conf $(DESTDIR)$(TMPFILESDIR)/sluice.conf
	rm -f $(DESTDIR)$(PREFIX)/share/man/man1/sluicectl*.1
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/sluiced.8 $(DESTDIR)$(PREFIX)/share/man/man5/sluice.toml.5

clean:
	rm -rf $(BIN)
