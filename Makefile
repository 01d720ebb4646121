# corral — see README.md. `make help` lists the targets.

SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/corralhq/corral/internal/version.Version=$(VERSION)
BIN := bin
GOTEST_FLAGS ?=
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help build test test-unit lint fmt chaos soak bench bench-backup bench-e2e bench-recovery bench-restart bench-fence bench-fence-latency sim fuzz demo package cluster cluster-status cluster-down clean deps portal screenshots

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build corrald, corralctl and corral-lab into bin/
	@mkdir -p $(BIN)
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

deps: ## install the Debian packages the tests need (when missing)
	scripts/deps.sh test

# The fuzz targets in make test run a count of inputs, not a duration: Go
# 1.26's fuzz coordinator can fail a duration-bounded run at its deadline
# with "context deadline exceeded" and no crasher (go.dev/issue/75804,
# fixed in Go 1.27).
test: deps ## the full test suite, as CI runs it (installs what it needs; root), then each fuzz target for 20,000 inputs
	go test -count=1 -timeout 45m $(GOTEST_FLAGS) ./...
	$(MAKE) --no-print-directory fuzz FUZZTIME=20000x

demo: ## the demo: 3-host lab, guests, a host killed and recovered, a drain (KEEP=1 leaves it up; root)
	scripts/demo.sh

portal: ## rebuild the web portal (web/src -> web/dist, committed) with the locked npm packages; needs node and the npm registry
	cd web && npm ci --no-audit --no-fund && npm run build

screenshots: deps build ## the portal's browser test, saving its screenshots into docs/screenshots (root)
	mkdir -p docs/screenshots
	CORRAL_SCREENSHOTS=$(CURDIR)/docs/screenshots go test ./test/e2e -run TestPortalInBrowser -count=1 -v -timeout 20m

package: ## build the .deb and .rpm (corrald, corralctl, systemd unit, /etc/corral/corral.toml) into dist/
	scripts/package.sh dist

test-unit: ## fast tests only (no processes, no root)
	go test -count=1 -short ./...

lint: ## go vet, gofmt and staticcheck
	go vet ./...
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go run $(STATICCHECK) ./...

fmt: ## gofmt the tree
	gofmt -w .

bench: ## unit benchmarks: FSM, Raft commits, snapshots, placement
	go test -run '^$$' -bench . -benchtime 2s ./raftstore/... ./daemon/placement/...

bench-backup: ## backup cost on a 4 GiB disk: full vs qemu-img convert, incremental vs full, restore, bytes stored (needs qemu-utils; ~8 GiB in $$TMPDIR)
	go test -run '^$$' -bench BackupCost -benchtime 1x -timeout 30m -v ./daemon/backup/

bench-e2e: deps ## lab benchmarks: create-to-running, 50 creates at once (root)
	go test -run '^$$' -bench . -benchtime 1x -timeout 30m ./test/e2e/

SCHEDULES ?= 100
SEED ?= 1
chaos: deps build ## random fault schedules on a 5-host lab, checked from outside corrald (SCHEDULES=100 SEED=1; root)
	scripts/build-test-guest.sh _build/guest
	bin/corral-lab --dir /var/lib/corral-lab-chaos chaos --hosts 5 --schedules $(SCHEDULES) --seed $(SEED) --guest _build/guest

DURATION ?= 1h
soak: deps build ## a 3-host lab for DURATION (1h): VM churn, a fault every 5 min; every corrald's RSS, goroutines and fds must stay flat, no leader change without a fault (root)
	scripts/build-test-guest.sh _build/guest
	bin/corral-lab --dir /var/lib/corral-lab-soak soak --hosts 3 --duration $(DURATION) --guest _build/guest

SIM_HOSTS ?= 1000
SIM_VMS ?= 50000
sim: ## the cluster simulator: 1,000 hosts, 50,000 VMs, racks lost (with the leader too), a rolling drain of 100 hosts 10 at a time; prints the report (SIM_HOSTS= SIM_VMS= SEED=; no root)
	go test ./test/sim -run '^TestSim$$' -count=1 -v -timeout 60m -sim.hosts $(SIM_HOSTS) -sim.vms $(SIM_VMS) -sim.drain 100 -sim.drain-wave 10 -sim.seed $(SEED) -sim.out sim-report.json

bench-recovery: deps build ## recovery times after host kills, 10 runs per setting (root)
	scripts/build-test-guest.sh _build/guest
	bin/corral-lab --dir /var/lib/corral-lab-bench bench-recovery --runs 10 --guest _build/guest

bench-fence: deps ## fencing faults (corrald killed/stopped, follower/leader partitioned), 20 runs each, CPUs saturated, exact checker (root)
	go test -run '^$$' -bench FenceFaults -benchtime 1x -timeout 80m ./test/e2e/ -fence-runs 20

bench-fence-latency: deps ## the fencer's kill: lease end to all QEMUs dead, 1/8/32 guests, idle and saturated (root)
	go test -run '^$$' -bench FenceLatency -benchtime 5x -timeout 30m ./fencer/

bench-restart: build ## clean corrald restarts on a 3-host lab: SIGTERM to renewed lease (root)
	scripts/bench-restart.sh 8

FUZZTIME ?= 60s
fuzz: ## run each fuzz target (raft entry codec and apply, snapshot restore, config file, cluster RPC, admin API bodies, the origin header) for FUZZTIME (60s)
	go test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./raftstore
	go test -run '^$$' -fuzz FuzzRestore -fuzztime $(FUZZTIME) ./raftstore
	go test -run '^$$' -fuzz FuzzLoadConfig -fuzztime $(FUZZTIME) ./daemon
	go test -run '^$$' -fuzz FuzzServe -fuzztime $(FUZZTIME) ./daemon/rpc
	go test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./daemon/adminapi
	go test -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME) ./internal/origin

cluster: build ## start a 3-host cluster on 127.0.0.1-3 (data in _cluster/)
	scripts/local-cluster.sh up

cluster-status: ## corralctl status and host ls against the local cluster
	scripts/local-cluster.sh status

cluster-down: ## stop the local cluster and remove _cluster/
	scripts/local-cluster.sh down

clean: ## remove build output
	rm -rf $(BIN)
