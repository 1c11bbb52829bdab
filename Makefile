# Set-up lives here so that a fresh clone needs only `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Where pip finds torch. Empty: the default index (or this machine's own wheels). On a CPU-only
# machine elsewhere, TORCH_INDEX=https://download.pytorch.org/whl/cpu avoids the CUDA build.
TORCH_INDEX ?=
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/cortexreplay
STAMP := $(VENV)/.installed
DEMO := demo

.PHONY: demo brain-demo test bench clean-demo

# torch==2.13.0 goes first: an unpinned torch pulled in by another package would resolve a
# multi-GB CUDA build. The stamp makes a second `make` skip the install when nothing changed.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

$(DEMO)/checkpoint/pretrain.json: | $(STAMP)
	$(CLI) pretrain --out $(DEMO)/checkpoint --size tiny --seed 0

$(DEMO)/recording.zarr/zarr.json: $(DEMO)/checkpoint/pretrain.json
	$(CLI) synth --out $(DEMO)/recording.zarr --checkpoint $(DEMO)/checkpoint --seed 0 --force \
		--sounds 64 --duration 2 --subjects 1 --voxels 300 --repeats 2 --plasticity 3e-3 --retention 0.9 --snr 1

demo: $(STAMP) $(DEMO)/recording.zarr/zarr.json
	$(CLI) run scenarios/demo.toml --store $(DEMO)/recording.zarr --results $(DEMO)/results.zarr \
		--set model.checkpoint=$(DEMO)/checkpoint
	$(CLI) summary $(DEMO)/results.zarr --json > $(DEMO)/summary.json
	$(CLI) summary $(DEMO)/results.zarr

# An fMRI recording (100 parcels at TR 1.49 s, 4 sessions of their own sounds) for the
# brain-aligned modes, from the demo's checkpoint.
$(DEMO)/fmri.zarr/zarr.json: $(DEMO)/checkpoint/pretrain.json
	$(CLI) synth --out $(DEMO)/fmri.zarr --checkpoint $(DEMO)/checkpoint --seed 0 --force --modality fmri \
		--sounds 48 --duration 2 --subjects 1 --voxels 100 --repeats 2 --plasticity 3e-3 --retention 0.9 --snr 1

brain-demo: $(STAMP) $(DEMO)/fmri.zarr/zarr.json
	$(CLI) run scenarios/brain_aligned.toml --store $(DEMO)/fmri.zarr --results $(DEMO)/brain.zarr \
		--set model.checkpoint=$(DEMO)/checkpoint
	$(CLI) summary $(DEMO)/brain.zarr

bench: $(STAMP)
	$(PY) -m bench

clean-demo:
	rm -rf $(DEMO)
