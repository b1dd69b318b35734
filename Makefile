# skbpath: every target sets up what it needs, and can be run again.
#   make demo   live trace of TCP in the lab, rendered to out/
#   make test   lint, types, unit tests and lab tests
#   make bench  benchmarks (bench/)

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := qemu-system-x86 linux-image-6.1.0-56-amd64 linux-headers-6.1.0-56-amd64 \
	python3-bpfcc bpfcc-tools python3-venv iperf3 graphviz busybox-static iproute2 iputils-ping gcc nftables
OUT := out

.PHONY: all setup apt venv demo test unit lab-test lint bench bench-lab bench-attach docs clean
all: test

apt:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "apt: installing $$missing"; \
	    SUDO=$$([ $$(id -u) = 0 ] || echo sudo); \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# bcc's Python module is Debian's, built for /usr/bin/python3: hence that
# interpreter and --system-site-packages.
$(VENV)/.installed: pyproject.toml | apt
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lab]'
	touch $@

venv: $(VENV)/.installed
setup: apt venv

demo: setup
	mkdir -p $(OUT)
	$(VENV)/bin/skbpath lab -o $(OUT)/lab.skbtrace
	$(VENV)/bin/skbpath render $(OUT)/lab.skbtrace -o $(OUT)
	$(VENV)/bin/skbpath replay $(OUT)/lab.skbtrace --max-depth 14

lint: setup
	$(VENV)/bin/ruff check tracer probes render tests bench docs
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -m 'not lab' -q

lab-test: setup
	$(VENV)/bin/pytest -m lab -q

# The lab tests must run, not skip: SKBPATH_REQUIRE_LAB turns a skip into a failure.
test: setup lint
	SKBPATH_REQUIRE_LAB=1 $(VENV)/bin/pytest -q

bench: setup
	$(PY) bench/run.py

# Boots the lab: untraced vs traced iperf3, alternating (root, minutes).
bench-lab: setup
	$(PY) bench/lab_throughput.py

bench-attach: setup
	$(PY) bench/attach_cost.py

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache

docs: setup
	$(PY) docs/make_images.py sample_traces/tcp_bulk.skbtrace
