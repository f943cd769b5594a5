# hypernas: the README's two commands are `make book` and `make test`.
#   make book                 set up, regenerate Tables 1-3 and Figure 2 (PROFILE=quick), build the book
#   make book PROFILE=paper   the same at the thesis's scale (hours on a CPU)
#   make test                 set up, run the tests, build the book from a smoke run, browser-check it
#   make lab                  set up, start JupyterLab on book/ (chapters open as notebooks)
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= quick
LAB_PORT ?= 8888
# offline copies of the data sets (this workplace keeps CIFAR-10 in ../shared/data);
# without it, torchvision downloads them
SHARED_DATA := $(abspath ../shared/data)
export HYPERNAS_DATA ?= $(if $(wildcard $(SHARED_DATA)),$(SHARED_DATA),)

.PHONY: setup system-deps book test lab bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[book,test,lab]"
	touch $@

setup: $(VENV)/.installed
	$(BIN)/python -c "from hypernas.fast import kernels; print(kernels.report())"

# Debian packages for offline Fashion-MNIST and the browser check (root + apt only;
# elsewhere torchvision downloads the data and the browser check needs a Chromium)
system-deps:
	@if [ -x /usr/bin/chromium ] && [ -d /usr/share/datasets/fashion-mnist ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q chromium dataset-fashion-mnist >/dev/null || \
	  (apt-get update -q >/dev/null && apt-get install -y -q chromium dataset-fashion-mnist >/dev/null); \
	else echo "note: install chromium (browser check) yourself; data will be downloaded"; fi

book: setup
	$(BIN)/hypernas reproduce --profile $(PROFILE)
	bash scripts/build_book.sh

test: setup system-deps
	$(BIN)/pytest -q -m "not book"
	$(BIN)/hypernas reproduce --profile smoke
	bash scripts/build_book.sh
	$(BIN)/pytest -q -m book

# JupyterLab on book/, local only, behind a fresh random token (passed in JUPYTER_TOKEN,
# not on the command line, where `ps` would show it). jupyter/jupyter_server_config.py
# (put on JUPYTER_CONFIG_PATH) makes .md files open as notebooks; book/jupytext.toml keeps
# them unpaired. Ctrl-C stops the server.
lab: setup
	@export JUPYTER_TOKEN=$$($(BIN)/python -c "import secrets; print(secrets.token_hex(24))"); \
	export JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}"; \
	echo ""; \
	echo "JupyterLab on book/, open in a browser:"; \
	echo "    http://127.0.0.1:$(LAB_PORT)/lab/tree/intro.md?token=$$JUPYTER_TOKEN"; \
	echo "Every chapter opens as a notebook; edit its \`parameters\` cell, run the cells, save"; \
	echo "(the .md is rewritten, without outputs). Ctrl-C stops the server."; \
	echo ""; \
	exec $(BIN)/jupyter lab --notebook-dir=book --ip=127.0.0.1 --port=$(LAB_PORT) \
	  --ServerApp.port_retries=0 --ServerApp.log_level=WARN \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: setup
	$(BIN)/hypernas bench

clean:
	rm -rf _build build book/generated results/smoke results/quick figures/smoke figures/quick
