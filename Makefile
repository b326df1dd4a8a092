# The two set-up commands of the README: `make run` and `make test`. Both create .venv/ when missing.
# `make installer` / `make installer-test`: the Linux installers into dist/ and their smoke test (issue 15).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.liverplan-installed
XVFB_PKGS := xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxkbcommon-x11-0 libxcb-xinerama0 libxcb-randr0 libxcb-shape0 libxcb-xkb1 libgl1 libegl1
# Reports: Pango for the PDF writer (WeasyPrint), CJK fonts so names in any script print, Chromium (the
# "HTML opens in a browser" test) and poppler-utils (pdftoppm/pdftotext to look at the PDF pages).
REPORT_PKGS := libpango-1.0-0 libpangoft2-1.0-0 fonts-noto-cjk fonts-dejavu-core chromium poppler-utils
# The tumour-board report (issue 19): Mesa's EGL so that VTK draws the 3D views without a display (VTK >= 9.4
# falls back to EGL when there is no X server), and dciodvfy (dicom3tools) to validate its DICOM Encapsulated PDF.
BOARD_PKGS := libegl1 libegl-mesa0 dicom3tools

.PHONY: run test venv apt-deps clean installer installer-test installer-apt-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,installer]"
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
	@if ! command -v dciodvfy >/dev/null 2>&1 || ! ldconfig -p | grep -q libEGL_mesa; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BOARD_PKGS); \
	  else echo "Tumour-board report tools missing: install $(BOARD_PKGS) (needs root)"; fi; \
	fi

run: $(STAMP)
	$(PY) main.py

test: $(STAMP) apt-deps
	$(PY) -m pytest -p xvfb --xvfb-backend xvfb $(PYTEST_ARGS)

# The frozen one-folder bundle (PyInstaller, installer/liverplan.spec), then the .deb and the portable
# tar.zst (installer/linux/build_linux.sh) into dist/, with their sizes. build/installer/ is rebuilt each
# time (a fresh checkout has none); the build time is printed.
INSTALLER_BUILD := build/installer
installer: $(STAMP) installer-apt-deps
	rm -rf $(INSTALLER_BUILD) dist/liverplan_*.deb dist/liverplan-*.tar.zst
	@start=$$(date +%s); \
	PYTHONPATH=$(CURDIR) $(PY) -m PyInstaller --noconfirm --log-level WARN --distpath $(INSTALLER_BUILD)/bundle \
	  --workpath $(INSTALLER_BUILD)/work installer/liverplan.spec && \
	PYTHON=$(PY) installer/linux/build_linux.sh $(INSTALLER_BUILD)/bundle/liverplan dist && \
	rm -rf $(INSTALLER_BUILD) && \
	echo "installer build time: $$(( $$(date +%s) - start )) s"

# Installs the .deb and the portable archive as a clinician would and checks them without the source tree
# or network (installer/linux/smoke_test.py). Needs root (dpkg -i); removes everything it installed.
installer-test: installer apt-deps
	$(PY) installer/linux/smoke_test.py dist

# zstd for the portable archive (dpkg-deb has its own); Xvfb comes with apt-deps.
installer-apt-deps:
	@if ! command -v zstd >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends zstd; \
	  else echo "zstd missing: install it (apt-get install zstd, needs root)"; exit 1; fi; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
