# Two commands do all of the setup: `make lab` and `make test` (see README.md).
# Both create .venv/ when it is missing and skip the install when the requirements did not change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The install is redone when one of these files changes (stamp keyed on their hash).
REQ_HASH := $(shell cat requirements.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
DEV_HASH := $(shell cat requirements.txt requirements-dev.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-12)
LAB_STAMP := $(VENV)/.installed-lab-$(REQ_HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(DEV_HASH)
# pip on machines with local wheel mirrors prints one warning per package; keep the log readable.
QUIET_PIP := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
# Kernels, `torchrun` and other tools that notebooks and tests start come from the venv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
LAB_ARGS ?=
# JupyterLab refuses to run as root (containers, CI) unless told it is deliberate.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
PYTEST_ARGS ?=
# conftest.py supplies the sanitizer (notebooks/sanitize.cfg) and the kernel of this environment.
NBVAL := --nbval --nbval-cell-timeout=600

.PHONY: help venv venv-dev lab test test-fast test-gpu test-compat notebooks notebooks-zh translations messages lint format bench stamp-urls site clean

help:
	@echo "make lab        set up .venv and start JupyterLab on notebooks/"
	@echo "make test       set up .venv (with test tools) and run every test and notebook (CPU)"
	@echo "make notebooks  re-run every notebook from a clean kernel and save its outputs (both editions)"
	@echo "make translations  update translations/zh/*.po from the English notebooks (then translate)"
	@echo "make notebooks-zh  build notebooks/zh/ from the English notebooks + translations, and run them"
	@echo "make messages   extract, update and compile the helpers' message catalog (Babel)"
	@echo "make lint       ruff on helpers/, tests/ and the notebooks"
	@echo "make test-gpu   the suite on a CUDA machine (COURSE_DEVICE=cuda, same outputs compared)"
	@echo "make bench      measure course runtime, loop overhead and checkpoint I/O"
	@echo "make test-compat PYTHON=3.12 TORCH=2.11 [IPYWIDGETS=7.7.1]  the suite on another stack"
	@echo "make site       build the course website (both editions) into build/site/ from the committed notebooks"
	@echo "make stamp-urls write pyproject.toml's URLs and colab-ref into the notebooks and READMEs"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(LAB_STAMP): | $(PY)
	$(PIP) install -r requirements.txt $(QUIET_PIP)
	$(PIP) install --no-deps -e . $(QUIET_PIP)
	$(PY) -c "import torch, torchvision, ipywidgets, helpers; print('installed: torch', torch.__version__)"
	rm -f $(VENV)/.installed-lab-*; touch $@

$(DEV_STAMP): $(LAB_STAMP)
	$(PIP) install -r requirements-dev.txt $(QUIET_PIP)
	$(PY) -c "import hypothesis, nbformat, pytest, nbval; print('installed: test tools')"
	rm -f $(VENV)/.installed-dev-*; touch $@

venv: $(LAB_STAMP)
venv-dev: $(DEV_STAMP)

lab: $(LAB_STAMP)
	$(VENV)/bin/jupyter lab notebooks/ $(ALLOW_ROOT) $(LAB_ARGS)

# Committed outputs come from one torch thread: float sums depend on the thread count, and one
# thread also keeps the tiny models fast on a busy machine. `make test` compares under the same.
NB_ENV := COURSE_DEVICE=cpu COURSE_NUM_CLASSES= OMP_NUM_THREADS=1

test: $(DEV_STAMP)
	$(NB_ENV) COURSE_REQUIRE_DEV_TOOLS=1 MPLBACKEND=Agg $(PY) -m pytest $(NBVAL) tests notebooks $(PYTEST_ARGS)

# Helpers' tests only, no notebooks: the quick loop while editing helpers/.
test-fast: $(DEV_STAMP)
	COURSE_DEVICE=cpu $(PY) -m pytest tests -m "not slow and not browser" $(PYTEST_ARGS)

# On a CUDA machine: every unit test (the `cuda` ones run instead of skipping) and every notebook
# on the GPU, compared strictly with the committed CPU outputs: measurements are masked anyway,
# and conftest.py masks the device's name (notebooks/sanitize-devices.cfg).
test-gpu: $(DEV_STAMP)
	$(PY) -c "import sys, torch; torch.cuda.is_available() or sys.exit('make test-gpu needs a CUDA GPU: torch ' + torch.__version__ + ' sees none (a CPU-only build, or no driver)')"
	COURSE_DEVICE=cuda COURSE_NUM_CLASSES= OMP_NUM_THREADS=1 MPLBACKEND=Agg $(PY) -m pytest --nbval --nbval-cell-timeout=600 \
		tests notebooks -m "not browser" $(PYTEST_ARGS)

# Another Python / torch / ipywidgets stack in a venv of its own under .venv-compat/ (built once,
# several GB), then the unit tests and strict nbval there (tools/compat.py). Once per release:
#   make test-compat PYTHON=3.10 TORCH=2.6
#   make test-compat PYTHON=3.12 TORCH=2.11 IPYWIDGETS=7.7.1    # Google Colab's stack
#   make test-compat PYTHON=3.13 TORCH=2.15
TORCH ?=
IPYWIDGETS ?=
COMPAT_ARGS ?=
test-compat:
	@test -n "$(TORCH)" || { echo "make test-compat needs TORCH=2.x (and PYTHON=3.x), e.g. make test-compat PYTHON=3.12 TORCH=2.11"; exit 2; }
	$(PYTHON) -m tools.compat --python $(PYTHON) --torch $(TORCH) $(if $(IPYWIDGETS),--ipywidgets $(IPYWIDGETS),) $(COMPAT_ARGS)

# `make notebooks NB=notebooks/03_saving_and_loading.ipynb` re-runs just one English chapter
# (then `make notebooks-zh` rebuilds the Chinese edition from it).
NB ?= notebooks/*.ipynb
notebooks: $(DEV_STAMP)
	$(NB_ENV) MPLBACKEND=module://matplotlib_inline.backend_inline \
		$(PY) -m tools.run_notebooks $(NB)
	$(if $(filter notebooks/*.ipynb,$(NB)),$(MAKE) notebooks-zh,)

# The Chinese edition (tools/i18n_notebooks.py): notebooks/zh/ is built from the English notebooks
# and translations/zh/NN_name.po, then run like the English ones. `build` refuses while a
# translation is missing or stale: `make translations` marks what changed, a translator fills it.
ZH ?= notebooks/zh/*.ipynb
translations: $(DEV_STAMP)
	$(PY) -m tools.i18n_notebooks extract
notebooks-zh: $(DEV_STAMP)
	$(PY) -m tools.i18n_notebooks build
	$(NB_ENV) MPLBACKEND=module://matplotlib_inline.backend_inline \
		$(PY) -m tools.run_notebooks $(ZH)

# The helpers' messages (gettext domain `helpers`, helpers/locale/): find new ones in the code,
# merge them into each language's .po (translate the empty entries), compile the .mo it ships.
messages: $(DEV_STAMP)
	mkdir -p build
	$(VENV)/bin/pybabel extract -F babel.cfg -k N_ --no-wrap -o build/helpers.pot .
	$(VENV)/bin/pybabel update -i build/helpers.pot -d helpers/locale -D helpers -l zh --no-wrap --ignore-obsolete
	$(VENV)/bin/pybabel compile -d helpers/locale -D helpers --statistics

# Colab badges and Setup cells get pyproject.toml's [project.urls] Repository and [tool.course]
# colab-ref, the READMEs' website line its Documentation address (tools/stamp_urls.py; only those
# sources change, a second run changes nothing).
stamp-urls: | $(PY)
	$(PY) -m tools.stamp_urls

# The website (tools/site.py, docs/conf.py): Sphinx + myst-nb show the notebooks' stored outputs,
# nothing is executed or fetched; open build/site/index.html or serve the folder.
site: $(DEV_STAMP)
	$(PY) -m tools.site

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check helpers tests tools notebooks

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix helpers tests tools notebooks

bench: $(DEV_STAMP)
	COURSE_DEVICE=cpu $(PY) -m bench.run

clean:
	rm -rf .pytest_cache .ruff_cache runs checkpoints bench/results tests/artifacts
