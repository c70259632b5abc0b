# certfetch: the commands README.md documents. `make test` is what CI runs.

GO       ?= go
YAEGI    := $(GO) run github.com/traefik/yaegi/cmd/yaegi@v0.16.1
BENCHSTAT := $(GO) run golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: test test-go test-yaegi test-plugin-loader lint bench fuzz

## test: every test: the module, the plugin under `yaegi test`, and the nested
## module that loads the plugin the way Traefik and the plugin catalog do.
test: lint test-go test-yaegi test-plugin-loader

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd test/yaegi && $(GO) vet ./...

test-go:
	$(GO) test ./...

## test-yaegi: the plugin's own tests, interpreted (Go 1.21 semantics).
test-yaegi:
	$(YAEGI) test .

test-plugin-loader:
	cd test/yaegi && $(GO) test ./...

## bench: interpreted versus compiled middleware, compared with benchstat.
bench:
	cd test/yaegi && $(GO) test -run '^$$' -bench . -benchmem -count 10 | tee /tmp/certfetch-bench.txt
	$(BENCHSTAT) -col /impl /tmp/certfetch-bench.txt

## fuzz: request paths and tokens against the webroot plugin.
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzChallengePath -fuzztime 60s .
