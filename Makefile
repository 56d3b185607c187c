# One-command set-up: each target creates .venv and installs pinned dependencies when missing.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
# Real preference data (offline); empty = read the Hugging Face Hub.
DATA    ?= $(wildcard ../shared/data)
export ALIGNKIT_DATA_DIR := $(abspath $(DATA))
OUT     := outputs/$(PROFILE)
# make report SET="rm.train.lr=1e-4 seed=1"  ->  --set rm.train.lr=1e-4 --set seed=1 (papermill `overrides`)
SET     ?=
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax/package.json
# The environment, exactly: requirements.lock (compiled from requirements.txt) and requirements-nodeps.lock
# (from requirements-nodeps.txt: wheels installed without their dependencies), both with hashes. `make lock`.
LOCKS   := requirements.lock requirements-nodeps.lock
KERNEL  := $(VENV)/share/jupyter/kernels/alignkit/kernel.json

.PHONY: test test-fast report setup-report bench lab lock clean help
help:
	@echo "make test            set up .venv (+ chromium, CJK fonts, MathJax), run the whole test suite (DATA=$(DATA))"
	@echo "   TORCH_INDEX=URL   setting up .venv: where pip finds the lock's CPU torch (default: PyTorch's CPU"
	@echo "                     wheel index; empty: pip's own configuration only)"
	@echo "make report          run notebooks/NN_*.ipynb with papermill on PROFILE=$(PROFILE) into $(OUT)/notebooks/,"
	@echo "                     export each to HTML, build the book: _build/html/index.html"
	@echo "   PROFILE=gpu       the same on a GPU host;  PROFILE=tiny  a quick smoke run"
	@echo "   PROFILE=gpu-rehearsal  the gpu profile on this CPU (random Qwen2, local Hub mirror, 2 ranks; DATA= needed)"
	@echo "   SET=\"k=v k2=v2\"   config overrides passed to every notebook (papermill -p overrides)"
	@echo "   FORCE=1           rerun finished steps (default: reuse a finished run of the same config)"
	@echo "   NOBOOK=1          notebooks and HTML only, no book"
	@echo "make lab             JupyterLab on notebooks/ with the kernel 'Python (alignkit)' (this .venv, started in"
	@echo "                     the repository root): run any chapter cell by cell"
	@echo "make lock            recompile requirements.lock + requirements-nodeps.lock after editing requirements*.txt"
	@echo "                     (keeps locked versions that still fit; UPGRADE=1: newest allowed)"
	@echo "make bench           alignkit vs its peers (trl, one-at-a-time scoring), alternating and repeated, on"
	@echo "                     SmolLM2-135M: outputs/bench/results.json + results.md (QUICK=1 tiny model, REPEATS=3)"

# PyTorch's CPU wheel index: the lock pins the CPU build torch==2.13.0+cpu, which PyPI does not serve. Only
# torch's install reads it. Where it cannot be reached, pip warns (and retries, some seconds) and takes the
# wheel from its own configuration (find-links, a local index). TORCH_INDEX= (empty) leaves it out.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

# Installs the lock: hashes checked, no dependency resolution (the lock already lists every package); pip
# itself first, at the lock's version; then torch (the lock's torch lines, from TORCH_INDEX) and the rest of
# the lock (from PyPI). Then alignkit itself (editable).
$(BIN)/.installed: $(LOCKS) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	sed -n '/^pip==/,/# via/p' requirements.lock > $(VENV)/pip.lock
	sed -n '/^torch==/,/# via/p' requirements.lock > $(VENV)/torch.lock
	sed '/^torch==/,/# via/d' requirements.lock > $(VENV)/no-torch.lock
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r $(VENV)/pip.lock
	$(BIN)/pip install --quiet --no-deps --require-hashes $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) \
		-r $(VENV)/torch.lock
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(VENV)/no-torch.lock -r requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The notebooks' kernel 'alignkit': this .venv's Python, started in the repository root as papermill runs the
# notebooks, so relative paths (outputs/<profile>/, benchmarks/) mean in JupyterLab what they mean in
# `make report`. Registered inside .venv only (--sys-prefix).
$(KERNEL): $(BIN)/.installed
	$(BIN)/python -m ipykernel install --sys-prefix --name alignkit --display-name "Python (alignkit)" >/dev/null
	$(BIN)/python -c 'import json, sys; path, root = sys.argv[1:]; spec = json.load(open(path)); \
		spec["argv"].append("--IPKernelApp.exec_lines=__import__(\"os\").chdir(%r)" % root); \
		json.dump(spec, open(path, "w"), indent=1)' $@ $(CURDIR)

# After editing requirements.txt or requirements-nodeps.txt. pip-compile resolves requirements.txt (versions
# already in the lock are kept while they still fit; UPGRADE=1 takes the newest allowed) and writes every
# package with the sha256 of each of its files; no index URLs or local paths go into the file. The no-deps
# wheels are downloaded and hashed. Both need the package index.
lock: $(BIN)/.installed
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --annotation-style line \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(if $(UPGRADE),--upgrade) \
		--output-file requirements.lock requirements.txt
	tmp=$$(mktemp -d) && $(BIN)/pip download --quiet --no-deps --only-binary :all: --dest $$tmp \
		-r requirements-nodeps.txt && \
	{ echo "# Install with --no-deps. Compiled from requirements-nodeps.txt by \`make lock\` (a wheel's sha256)."; \
	  for f in $$tmp/*.whl; do b=$$(basename $$f); \
		printf '%s==%s \\\n    --hash=sha256:%s\n' "$$(echo $${b%%-*} | tr _A-Z -a-z)" \
			"$$(echo $$b | cut -d- -f2)" "$$(sha256sum $$f | cut -d' ' -f1)"; done; } > requirements-nodeps.lock; \
	status=$$?; rm -rf $$tmp; exit $$status

# System pieces of the report and its browser test: Debian chromium (headless) and fonts-noto-cjk (Chinese
# in figures), installed when missing and we are root with apt-get; otherwise a message, and the browser
# test skips / figures use English labels. Then MathJax 3 from the npm package into book/_static/ (offline math).
setup-report: $(MATHJAX)
	@if command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "set-up: installing Debian chromium and fonts-noto-cjk"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium fonts-noto-cjk >/dev/null || echo "set-up: apt-get install failed; browser test will skip"; \
	else echo "set-up: chromium / fonts-noto-cjk missing and not installable here (needs root + apt-get):" \
		"the browser test skips and figures fall back to English labels"; fi

$(MATHJAX):
	@if command -v npm >/dev/null 2>&1; then \
		tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null) && \
		tar -xzf $$tmp/mathjax-$(MATHJAX_VERSION).tgz -C $$tmp && rm -rf book/_static/mathjax && mkdir -p book/_static/mathjax && \
		cp -r $$tmp/package/es5/tex-mml-chtml.js $$tmp/package/es5/input $$tmp/package/es5/output \
			$$tmp/package/es5/ui $$tmp/package/es5/a11y $$tmp/package/es5/sre $$tmp/package/es5/adaptors \
			$$tmp/package/package.json $$tmp/package/LICENSE book/_static/mathjax/ && rm -rf $$tmp && \
		echo "set-up: MathJax $(MATHJAX_VERSION) copied to book/_static/mathjax (math renders offline)"; \
	else echo "set-up: npm not found; the book loads MathJax from a CDN (math renders only online)"; fi

test: $(BIN)/.installed $(KERNEL) setup-report
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed $(KERNEL)
	$(BIN)/python -m pytest -m "not slow"

# papermill runs notebooks/NN_*.ipynb in order (each reuses or trains what it needs), nbconvert exports
# HTML, jupyter-book builds _build/html; prints the time per notebook, stops naming the failing cell.
report: $(BIN)/.installed $(KERNEL) setup-report
	$(BIN)/alignkit report --profile $(PROFILE) $(addprefix --set ,$(SET)) $(if $(FORCE),--force) \
		$(if $(NOBOOK),--no-book)

# JupyterLab from this .venv, opened on notebooks/ (its widgets extension draws the progress bars). Each
# notebook's kernel is 'Python (alignkit)'; set `profile = "tiny"` in a parameters cell for a quick run.
# LAB_ARGS="--no-browser --port 8899" passes options through; as root (containers) it adds --allow-root.
lab: $(BIN)/.installed $(KERNEL)
	$(BIN)/jupyter lab --FileContentsManager.preferred_dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) \
		$(LAB_ARGS)

# every benchmarks/bench_*.py, each in its own process; copies $(OUT)/report_times.json (make report) in
bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py $(if $(filter-out 0 no false,$(QUICK)),--quick) --repeats $(or $(REPEATS),3) \
		--report-times $(OUT)/report_times.json

clean:
	rm -rf outputs _build book/chapters
