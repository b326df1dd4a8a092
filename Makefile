# The two set-up commands of the README: `make run` and `make test`. Both create .venv/ when missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.liverplan-installed
XVFB_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libgl1 libegl1
# Reports: Pango for the PDF writer (WeasyPrint), CJK fonts so names in any script print, Chromium (the
# "HTML opens in a browser" test) and poppler-utils (pdftoppm/pdftotext to look at the PDF pages).
REPORT_PKGS := libpango-1.0-0 libpangoft2-1.0-0 fonts-noto-cjk fonts-dejavu-core chromium poppler-utils

.PHONY: run test venv apt-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

# Xvfb and the xcb libraries Qt needs on a bare Debian machine (only when root and missing).
apt-deps:
	@if ! command -v Xvfb >/dev/null 2>&1 || ! ldconfig -p | grep -q libxcb-icccm.so.4; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(XVFB_PKGS); \
	  else echo "Xvfb or xcb libraries missing: install $(XVFB_PKGS) (needs root)"; fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v pdftoppm >/dev/null 2>&1 \
	    || ! ldconfig -p | grep -q libpangoft2 || ! fc-list 2>/dev/null | grep -q "Noto Sans CJK"; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(REPORT_PKGS); \
	  else echo "Report tools missing: install $(REPORT_PKGS) (needs root)"; fi; \
	fi

run: $(STAMP)
	$(PY) main.py

test: $(STAMP) apt-deps
	$(PY) -m pytest -p xvfb --xvfb-backend xvfb $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
