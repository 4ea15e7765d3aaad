# Two entry points: `make reproduce` (the main job) and `make test` (the suite).
# Each creates or reuses .venv and installs the project into it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
# glibc keeps large freed tensors in the heap instead of unmapping them (atm_core/engine/runtime.py)
export MALLOC_MMAP_THRESHOLD_ := 4294967296
export MALLOC_TRIM_THRESHOLD_ := 4294967296

.PHONY: reproduce test install clean-venv

# torchcodec needs FFmpeg's shared libraries: installed with apt where this runs as root on a
# Debian/Ubuntu machine without them; elsewhere install FFmpeg yourself (the tests that need it
# are skipped, with the reason, until then).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! ldconfig -p | grep -q libavcodec; then \
		apt-get update && apt-get install -y --no-install-recommends ffmpeg; fi
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(PY) -m atm_core.reproduce $(ARGS)

test: $(STAMP)
	$(PY) -m pytest $(ARGS)

clean-venv:
	rm -rf $(VENV)
