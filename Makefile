# skbpath: every target sets up what it needs, and can be run again.
#   make demo   live trace of TCP in the lab, rendered to out/
#   make test   lint, types, unit tests and lab tests
#   make bench  benchmarks (bench/)
#   make docs   the README's pictures (SVG, and PNG screenshots by headless Chromium)

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The lab kernels: the newest ABI of each series the archive has (image and
# headers), found with apt-cache at setup time: an ABI pinned here breaks
# setup once Debian drops it.  Patterns: 6.1.0-57-amd64, 6.12.117+deb12-amd64.
LAB_KERNELS := '6\.1\.0-[0-9]+' '6\.12\.[0-9]+\+deb[0-9]+'
APT_PACKAGES := qemu-system-x86 \
	python3-bpfcc bpfcc-tools python3-venv iperf3 graphviz busybox-static iproute2 iputils-ping gcc nftables bpftrace \
	chromium chromium-driver libpcap0.8
OUT := out

.PHONY: all setup apt venv demo test unit lab-test lint bench bench-lab bench-attach bench-drain docs clean
all: test

# A stale package list may lack a kernel series, or name an ABI the archive has
# dropped: hence apt-get update before installing anything.
apt:
	@SUDO=$$([ $$(id -u) = 0 ] || echo sudo); \
	newest() { apt-cache pkgnames linux-image-6. 2>/dev/null \
	    | grep -E "^linux-image-$$1-amd64$$" | sort -V | tail -1; }; \
	resolve() { kernels=; for re in $(LAB_KERNELS); do \
	    img=$$(newest "$$re"); [ -n "$$img" ] || { bad=$$re; return 1; }; \
	    kernels="$$kernels $$img $${img/linux-image/linux-headers}"; done; }; \
	missing() { for p in $(APT_PACKAGES) $$kernels; do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done; }; \
	if resolve && [ -z "$$(missing)" ]; then exit 0; fi; \
	$$SUDO apt-get update -qq; \
	resolve || { echo "apt: no lab kernel matching linux-image-$$bad-amd64"; exit 1; }; \
	todo=$$(missing | tr "\n" " "); \
	echo "apt: installing $$todo"; \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$todo >/dev/null

# bcc's Python module is Debian's, built for /usr/bin/python3: hence that
# interpreter and --system-site-packages.
$(VENV)/.installed: pyproject.toml | apt
	[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lab]'
	touch $@

venv: $(VENV)/.installed
setup: apt venv

# Ends with a screenful (replay --summary); the full tree is one command away:
# skbpath replay out/lab.skbtrace.
demo: setup
	@mkdir -p $(OUT)
	$(VENV)/bin/skbpath lab -o $(OUT)/lab.skbtrace
	@$(VENV)/bin/skbpath render $(OUT)/lab.skbtrace -o $(OUT) >/dev/null
	@echo
	@$(VENV)/bin/skbpath replay $(OUT)/lab.skbtrace --summary \
	    --svg $(OUT)/calltree.svg --svg $(OUT)/flamegraph.svg

# mypy checks the sources under their installed names, through src/skbpath
# (see pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check tracer probes render tests bench docs
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -m 'not lab' -q -n auto

lab-test: setup
	$(VENV)/bin/pytest -m lab -q

# The lab and host tests must run, not skip: SKBPATH_REQUIRE_LAB turns a skip into a failure.
# The lab tests run in one process, since the lab boots one guest at a time;
# most of their time is bcc compiling in the guest on one emulated CPU, so
# the pure and host tests run beside them, in one worker, their output shown
# after the lab's.  Both run, whichever fails.
test: setup lint
	@status=0; log=$$(mktemp); \
	SKBPATH_REQUIRE_LAB=1 $(VENV)/bin/pytest -q -n 1 -m 'not lab' >$$log 2>&1 & unit=$$!; \
	SKBPATH_REQUIRE_LAB=1 $(VENV)/bin/pytest -q -m lab || status=1; \
	wait $$unit || status=1; \
	echo "== the pure and host tests, run beside the lab tests:"; cat $$log; rm -f $$log; \
	exit $$status

bench: setup
	$(PY) bench/run.py

# Boots the lab: iperf3 untraced, under skbpath trace (events, --aggregate) and under
# bpftrace, in alternating rounds (root, about 20 minutes; BENCH_MODES, BENCH_RUNS).
bench-lab: setup
	$(PY) bench/lab_throughput.py

bench-attach: setup
	$(PY) bench/attach_cost.py

# Ring buffer drain: the bulk reader vs bcc's callback (root, bcc, the 6.1 headers).
bench-drain: setup
	$(PY) bench/drain.py

clean:
	rm -rf $(OUT) .pytest_cache .mypy_cache .ruff_cache

# The README's pictures: SVGs, and PNG screenshots of them by headless Chromium.
docs: setup
	$(PY) docs/make_images.py sample_traces/tcp_bulk.skbtrace
