# llmspell — the few verbs a newcomer needs. `make help` lists them.
CARGO  ?= cargo
VENV   := target/venv
PY     := $(VENV)/bin/python
# Enterprise Gateway pins an older Jupyter stack (jupyter_server<2, jupyter_client<7): its own venv.
VENV_EG := target/venv-eg
BIN    := target/release/llmspell
DEBUG_BIN := target/debug/llmspell
# The portable build (cargo feature `portable`: the POSIX platform backend macOS and the BSDs
# compile) in a target directory of its own, so it never overwrites the default build.
PORTABLE_DIR := $(abspath target/portable)
# Every test and demo uses a private home so nothing touches the user's ~/.llmspell.
DEMO_HOME := target/demo-home

.PHONY: help build demo test lint test-rust test-portable test-jupyter test-lab venv venv-eg bench install fuzz soak clean
FUZZ_SECS ?= 60

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## release build of the llmspell binary (target/release/llmspell)
	$(CARGO) build --release

demo: build ## run examples/demo.lua through an auto-started kernel, twice (state persists), then stop it
	LLMSPELL_HOME=$(abspath $(DEMO_HOME)) $(BIN) run examples/demo.lua
	LLMSPELL_HOME=$(abspath $(DEMO_HOME)) $(BIN) run examples/demo.lua
	LLMSPELL_HOME=$(abspath $(DEMO_HOME)) $(BIN) kernel stop --all

$(VENV)/.ok: tests/requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r tests/requirements.txt
	touch $@

venv: $(VENV)/.ok ## create the Python venv with the Jupyter test tools (target/venv)

$(VENV_EG)/.ok:
	python3 -m venv $(VENV_EG)
	$(VENV_EG)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_EG)/bin/python -m pip install --quiet "jupyter_enterprise_gateway>=3.3,<3.4"
	touch $@

venv-eg: $(VENV_EG)/.ok ## Jupyter Enterprise Gateway in a venv of its own (target/venv-eg), for test_gateway_launch.py

test: lint test-rust test-jupyter test-lab ## everything: fmt and clippy, cargo tests, the Jupyter conformance and client tests, JupyterLab in Chromium

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features portable -- -D warnings

test-rust: ## cargo unit and integration tests, under the Linux backend and the portable one (a run still going after 45 min fails: a test hangs)
	$(CARGO) test --no-run
	@timeout --kill-after=30 2700 $(CARGO) test || { rc=$$?; \
	  if [ $$rc -ge 124 ]; then echo "test-rust: cargo test was stopped after 45 min: a test hangs (the last 'has been running for over 60 seconds' line names it)" >&2; fi; \
	  exit $$rc; }
	@# Same target directory: only llmspell itself is built again, not its dependencies.
	$(CARGO) test --features portable --no-run
	@timeout --kill-after=30 2700 $(CARGO) test --features portable || { rc=$$?; \
	  if [ $$rc -ge 124 ]; then echo "test-rust: cargo test --features portable was stopped after 45 min: a test hangs" >&2; fi; \
	  exit $$rc; }
	$(CARGO) build

test-portable: venv venv-eg ## everything with the portable build (target/portable): the Rust suites, Jupyter, JupyterLab
	CARGO_TARGET_DIR=$(PORTABLE_DIR) $(CARGO) test --features portable
	CARGO_TARGET_DIR=$(PORTABLE_DIR) $(CARGO) build --features portable
	LLMSPELL_BIN=$(PORTABLE_DIR)/debug/llmspell $(PY) -m pytest -q -m "not lab" tests/jupyter
	LLMSPELL_BIN=$(PORTABLE_DIR)/debug/llmspell $(PY) -m pytest -q -m lab tests/jupyter

test-jupyter: venv venv-eg ## jupyter_kernel_test, jupyter_client, jupyter console, nbclient and Enterprise Gateway against the debug build
	$(CARGO) build
	LLMSPELL_BIN=$(abspath $(DEBUG_BIN)) $(PY) -m pytest -q -m "not lab" tests/jupyter

test-lab: venv ## JupyterLab 4 in headless Chromium (apt-get install chromium): run, rich output, input, completion, interrupt, restart; screenshots in target/lab-screens
	$(CARGO) build
	LLMSPELL_BIN=$(abspath $(DEBUG_BIN)) $(PY) -m pytest -q -m lab tests/jupyter

$(VENV)/.bench-ok: $(VENV)/.ok bench/requirements.txt
	$(PY) -m pip install --quiet -r bench/requirements.txt
	touch $@

bench: build $(VENV)/.bench-ok ## side-by-side figures against xeus-python, ipykernel and ilua (target/bench.json)
	@command -v lua5.4 >/dev/null || { apt-get update -qq && apt-get install -y -qq lua5.4; } || echo "bench: no lua5.4: ILua and the lua5.4 baseline are skipped"
	$(CARGO) build --release --example bench_client
	CARGO_TARGET_DIR=$(PORTABLE_DIR) $(CARGO) build --release --features portable
	$(PY) bench/bench.py --bin $(abspath $(BIN)) --portable-bin $(PORTABLE_DIR)/release/llmspell

soak: ## long tests: 100 000 requests with the kernel's memory sampled, and the stable wire fuzzer
	$(CARGO) test --release --test soak -- --ignored --nocapture

fuzz: ## fuzz the wire decoder and HMAC check for FUZZ_SECS seconds (cargo-fuzz, on the stable toolchain)
	@if command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked; then \
	  cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run wire_decode -- -max_total_time=$(FUZZ_SECS); \
	else \
	  FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --release --test soak fuzz_wire_decode_stable -- --ignored --nocapture; \
	fi

install: build ## install the binary to ~/.cargo/bin and the kernelspec for the current user
	$(CARGO) install --path . --locked
	llmspell kernel install --user

clean: ## remove build output, the venv and the demo home
	$(CARGO) clean
