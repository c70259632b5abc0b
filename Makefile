# certfetch: the commands README.md documents. `make test` is what CI runs.

GO       ?= go
YAEGI    := $(GO) run github.com/traefik/yaegi/cmd/yaegi@v0.16.1
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

## Everything here compiles with the release build's settings (dist/package and
## dist/container build static, with -trimpath), so that each package is compiled
## once per run rather than once for the tests and again for the packages: the
## cloud SDKs of lego's DNS providers take minutes to compile on two cores.
export CGO_ENABLED := 0
export GOFLAGS := $(strip $(shell $(GO) env GOFLAGS) -trimpath)

TESTS := test-go test-yaegi test-plugin-loader test-traefik-rules test-package test-e2e

.PHONY: test test-deps test-binaries $(TESTS) $(TESTS:%=after-lint-%) stepca-after-lint traefik-after-lint lint bench fuzz fuzz-rules

## test: every test: the module, the plugin under `yaegi test`, and the nested
## module that loads the plugin the way Traefik and the plugin catalog do,
## and the end-to-end suite against a real Traefik (test-e2e). test-deps
## comes first. On a machine without make, run scripts/test.
##
## The rest runs as a parallel make, four jobs, each job's output printed whole
## when it ends: the tests mostly wait (on test CAs, back-off timers, Traefik's
## reloads; a warm run keeps the two cores a quarter busy), so overlapping them
## with each other and with the Traefik build took a warm .ci/run from 12 to 8
## minutes. lint goes first of the Go work on the module because it compiles
## the module's packages: two go commands compiling the same packages at once
## would each do all the work (the build cache is shared, not the work in
## flight), and the DNS providers' SDKs take minutes. The step-ca and Traefik
## builds come after lint too: they share most of those packages (see
## after-lint-test-e2e below).
test: test-deps
	@$(MAKE) --no-print-directory -j4 --output-sync=target $(TESTS:%=after-lint-%)

$(TESTS:%=after-lint-%): after-lint-%: lint
	@$(MAKE) --no-print-directory $*

## test-binaries: builds the step-ca and Traefik binaries the tests run, both
## at once: on a fresh machine most of each build is waiting on the module
## proxy, which the other build's compiling overlaps.
test-binaries:
	@$(MAKE) --no-print-directory -j2 $(STEPCA_BIN) $(TRAEFIK_BIN)

## test-deps: installs the Debian packages the tests need when they are
## missing, or prints the command that does and fails (scripts/test-deps;
## add a package there, one line).
test-deps:
	@scripts/test-deps

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags certfetch_dns_rfc2136 ./fetcher/dnsprovider/ ./cmd/certfetch/
	cd test/yaegi && $(GO) vet ./...
	cd test/traefik/rules && $(GO) vet ./...
	cd dist/package && $(GO) vet ./...

## step-ca: Smallstep's ACME CA, built from test/stepca (a nested module, so
## the root go.mod never requires smallstep) with CGO_ENABLED=0: the cgo build
## needs libpcsclite for YubiKey support, which tests do not use. Its
## dependencies resolve at certfetch's versions (test/stepca/go.mod says why).
## Rebuilt only when missing or when test/stepca/go.mod or go.sum changes (the
## file name carries their hash; other builds in the cache are removed);
## STEPCA_BIN=/path/to/step-ca uses an existing binary instead.
STEPCA_VERSION := $(shell awk '$$1 == "require" && $$2 == "github.com/smallstep/certificates" { print $$3 } \
  $$1 == "github.com/smallstep/certificates" { print $$2 }' test/stepca/go.mod)
STEPCA_CACHE   ?= $(abspath $(shell $(GO) env GOCACHE)/../certfetch-stepca)
STEPCA_DEPS    := $(shell cat test/stepca/go.mod test/stepca/go.sum | sha256sum | cut -c1-12)
STEPCA_BIN     ?= $(STEPCA_CACHE)/step-ca-$(STEPCA_VERSION)-$(STEPCA_DEPS)

## test-go: the module's tests. The step-ca harness
## (internal/testkit/testservers.StartStepCA) needs a real step-ca: it is built
## once from the Go module proxy by the nested module test/stepca and cached
## outside the tree, like Traefik below.
## Three packages' tests at a time, not two (GOMAXPROCS): they mostly wait, and with
## two the longest (fetcher, 5 minutes watching step-ca) started only after acme's.
test-go: $(STEPCA_BIN)
	STEPCA_BIN=$(STEPCA_BIN) $(GO) test -p 3 ./...
	$(GO) test -tags certfetch_dns_rfc2136 ./fetcher/dnsprovider/

## test-yaegi: the plugin's own tests, interpreted (Go 1.21 semantics).
test-yaegi:
	$(YAEGI) test .

test-plugin-loader:
	cd test/yaegi && $(GO) test ./...

## test-traefik-rules: certfetch's router rule parser (fetcher/traefik) against
## Traefik v3.6.12's own ParseDomains and ParseHostSNI, in the nested module
## test/traefik/rules (its own, so that the Traefik build in test/traefik
## keeps Traefik's dependency versions). `make fuzz-rules` fuzzes the same.
test-traefik-rules:
	cd test/traefik/rules && $(GO) test ./...

## test-package: the .deb and .rpm built with nfpm (the nested module
## dist/package), checked by lintian, installed into a scratch root.
test-package:
	cd dist/package && $(GO) test ./...

## test-e2e: the end-to-end suite (e2e/, build tag e2e) against a real
## Traefik, built once from the Go module proxy by the nested module
## test/traefik (about 7 min on 2 cores after lint; its dependencies resolve at
## certfetch's versions, test/traefik/go.mod says why) and cached outside the
## tree; it is rebuilt only when missing or when test/traefik/go.mod or go.sum
## changes. TRAEFIK_BIN=/path/to/traefik uses an existing binary instead.
TRAEFIK_VERSION := $(shell awk '$$1 == "require" && $$2 == "github.com/traefik/traefik/v3" { print $$3 } \
  $$1 == "github.com/traefik/traefik/v3" { print $$2 }' test/traefik/go.mod)
TRAEFIK_CACHE  ?= $(abspath $(shell $(GO) env GOCACHE)/../certfetch-traefik)
TRAEFIK_DEPS   := $(shell cat test/traefik/go.mod test/traefik/go.sum | sha256sum | cut -c1-12)
TRAEFIK_BIN    ?= $(TRAEFIK_CACHE)/traefik-$(TRAEFIK_VERSION)-$(TRAEFIK_DEPS)

test-e2e: $(TRAEFIK_BIN)
	$(GO) vet -tags e2e ./e2e/
	TRAEFIK_BIN=$(TRAEFIK_BIN) $(GO) test -tags e2e -count=1 -parallel 16 -timeout 15m ./e2e/

# After both binaries' paths are known (prerequisites expand where they are read).
# Both binaries build after lint, beside the tests (which mostly wait): they share
# about 1,100 (Traefik) and 400 (step-ca) compiled packages with certfetch, which lint
# compiles first. On a fresh machine, the three builds at once took 26 minutes of the
# two cores before any test started; Traefik after lint but with its own dependency
# versions compiled 2,060 packages in 604 s, with certfetch's 1,070 in 395 s.
after-lint-test-go: stepca-after-lint
after-lint-test-e2e: traefik-after-lint
stepca-after-lint: lint
	@$(MAKE) --no-print-directory $(STEPCA_BIN)
traefik-after-lint: lint
	@$(MAKE) --no-print-directory $(TRAEFIK_BIN)

$(TRAEFIK_BIN):
	@test -n "$(TRAEFIK_VERSION)" || { echo "no github.com/traefik/traefik/v3 version in test/traefik/go.mod"; exit 1; }
	mkdir -p $(dir $@)
	cd test/traefik && $(GO) build -trimpath \
	  -ldflags "-X github.com/traefik/traefik/v3/pkg/version.Version=$(TRAEFIK_VERSION)" \
	  -o $@.tmp github.com/traefik/traefik/v3/cmd/traefik
	mv $@.tmp $@
	find $(dir $@) -maxdepth 1 -name 'traefik-*' ! -name $(notdir $@) -delete

$(STEPCA_BIN):
	@test -n "$(STEPCA_VERSION)" || { echo "no github.com/smallstep/certificates version in test/stepca/go.mod"; exit 1; }
	mkdir -p $(dir $@)
	cd test/stepca && CGO_ENABLED=0 $(GO) build -trimpath \
	  -ldflags "-X main.Version=$(STEPCA_VERSION)" \
	  -o $@.tmp github.com/smallstep/certificates/cmd/step-ca
	mv $@.tmp $@
	find $(dir $@) -maxdepth 1 -name 'step-ca-*' ! -name $(notdir $@) -delete

## bench: interpreted versus compiled middleware, compared with benchstat.
bench:
	cd test/yaegi && $(GO) test -run '^$$' -bench . -benchmem -count 10 | tee /tmp/certfetch-bench.txt
	$(BENCHSTAT) -col /impl /tmp/certfetch-bench.txt

## fuzz: request paths and tokens against the webroot plugin.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzChallengePath -fuzztime 60s .

fuzz-rules:
	cd test/traefik/rules && $(GO) test -run '^$$' -fuzz FuzzRuleDomains -fuzztime 60s .
