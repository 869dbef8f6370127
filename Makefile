# iptnlp: every artefact here is rebuilt from code + data by make. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR := models/ipt-area
CORPUS := data/corpus.jsonl
NOTES := $(sort $(wildcard data/notes/*.txt))
CONFIGS := $(wildcard configs/*.yml)
SOURCES := $(wildcard iptnlp/*.py)
DEMO_OUT := reports/demo-tagged.csv

.PHONY: help setup demo test test-slow train evaluate bench lint clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv/ and install iptnlp with its dev extras (pinned by requirements.lock)

$(CORPUS): $(NOTES) iptnlp/corpus.py iptnlp/taxonomy.py
	$(BIN)/python -m iptnlp.corpus build $@ $(NOTES)
	$(BIN)/python -m iptnlp.corpus readme data/README.md $(NOTES)

$(MODEL_DIR)/model.json: $(CORPUS) $(CONFIGS) $(SOURCES) | $(STAMP)
	$(BIN)/iptnlp train $(CORPUS) -o $(MODEL_DIR) --config configs/model.yml --force

demo: $(STAMP) ## tag data/examples/ with the shipped model and print a summary
	@mkdir -p reports
	$(BIN)/iptnlp tag data/examples/notes.csv -o $(DEMO_OUT) --force
	@$(BIN)/python -c "import pandas as pd; d = pd.read_csv('$(DEMO_OUT)'); \
	print(d[['note_id','status','area','confidence','phase','themes','off_phase_themes']].round(2).astype(object).fillna('').to_string(index=False)); \
	print('\nwritten to $(DEMO_OUT):', len(d), 'rows;', d['area'].value_counts().to_dict())"

test: $(STAMP) ## run the test suite (slow tests excluded)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) ## run only the slow tests
	$(BIN)/python -m pytest -q -m slow

train: $(STAMP) $(MODEL_DIR)/model.json ## rebuild the shipped model from data/ and configs/ if they changed

evaluate: $(STAMP) ## grouped CV, external dev set, baselines, ablation -> reports/evaluation.{md,json}
	$(BIN)/python -m iptnlp.evaluate

bench: $(STAMP) ## measure tagging speed against a tokenizer-only reference
	$(BIN)/python -m iptnlp.bench

lint: $(STAMP) ## ruff over the package and tests
	$(BIN)/ruff check iptnlp tests

clean: ## remove caches and generated reports (never the corpus or the shipped model)
	rm -rf .cache .pytest_cache .ruff_cache reports/demo-tagged.csv
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

AUDIT_DEMO := reports/audit-demo
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser)

.PHONY: audit-demo evaluate-audit
audit-demo: $(STAMP) ## audit data/examples/courses.csv -> reports/audit-demo/ (+ report.png with chromium)
	@mkdir -p $(AUDIT_DEMO)
	$(BIN)/iptnlp audit data/examples/courses.csv -o $(AUDIT_DEMO) --force
	@if [ -n "$(CHROMIUM)" ]; then \
	  $(CHROMIUM) --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	    --screenshot=$(CURDIR)/$(AUDIT_DEMO)/report.png --window-size=1280,2400 \
	    file://$(CURDIR)/$(AUDIT_DEMO)/report.html 2>/dev/null && echo "rendered $(AUDIT_DEMO)/report.png"; \
	else echo "chromium not found: skipped $(AUDIT_DEMO)/report.png (open $(AUDIT_DEMO)/report.html in a browser)"; fi

evaluate-audit: $(STAMP) ## themes (per theme, off-phase) and the audit on the corpus courses -> reports/evaluation.*
	$(BIN)/python -m iptnlp.evaluate --only themes-audit
