# Avatar Forge: `make install`, then `make run` (the stack on :8000) or `make test`.
SHELL := /bin/bash
# uv from PATH, else the copy `make install` puts in .tools/ (installed from PyPI).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.PHONY: install run demo test test-unit test-abuse test-fuzz lint format bench config-docs routes deploy-secrets vendor clean

# uv from PyPI: with python3's pip, else (Debian/Ubuntu's python3 has none) with the pip of a
# throwaway virtual environment (the venv module, python3-venv there).
install:
	@if ! command -v uv >/dev/null 2>&1 && [ ! -x .tools/bin/uv ]; then \
		echo "uv not found: installing it from PyPI into .tools/"; \
		if python3 -m pip --version >/dev/null 2>&1; then \
			python3 -m pip install --quiet --target .tools uv; \
		elif python3 -m venv .tools/pip-venv >/dev/null 2>&1; then \
			echo "python3 has no pip: using a virtual environment's"; \
			.tools/pip-venv/bin/python -m pip install --quiet --target .tools uv \
				&& rm -rf .tools/pip-venv || { rm -rf .tools/pip-venv; exit 1; }; \
		else \
			rm -rf .tools/pip-venv; \
			echo "python3 has neither pip nor venv: install uv (https://docs.astral.sh/uv/)," \
				"or python3-venv (Debian/Ubuntu: apt install python3-venv)" >&2; \
			exit 1; \
		fi; \
	fi
	$(UV) sync --frozen
	@# The demo OpenID provider (make demo, the sign-in tests) runs on Node; make run needs none.
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tools/oidc-provider --no-audit --no-fund --loglevel=error; \
		npm ci --prefix tools/playground-vendor --no-audit --no-fund --loglevel=error; \
	else \
		echo "node/npm not found: make run and make demo work (the demo without sign-in), but make test needs Node 20+"; \
	fi

run:
	$(UV) run --frozen python -m avatar_devstack

demo:
	$(UV) run --frozen python -m avatar_devstack --demo

lint:
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy  # what it checks, and how strictly: [tool.mypy] in pyproject.toml

format:
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

test: lint
	$(UV) run --frozen pytest

# The fast loop: no stack, no Traefik, no browser (tests marked `stack` left out, see the root
# conftest.py); a real Redis still starts. `make test` (what CI runs) runs everything.
test-unit:
	$(UV) run --frozen pytest -m "not stack"

# A hostile client's attacks on the real stack (part of `make test` too): per-address
# fairness, budgets, the gateway's limits (tests/abuse).
test-abuse:
	$(UV) run --frozen pytest tests/abuse

# The long contract fuzz: schemathesis, >= 2,000 generated requests through the gateway.
test-fuzz:
	CONTRACT_FUZZ_EXAMPLES=60 CONTRACT_FUZZ_MIN_CASES=2000 \
		$(UV) run --frozen pytest tests/e2e/test_contract_fuzz.py -s

# Latency benchmarks, each against a baseline measured in the same run (see bench/).
bench:
	$(UV) run --frozen python bench/chat_overhead.py
	$(UV) run --frozen python bench/memory_turn.py
	$(UV) run --frozen python bench/chat_stream.py
	$(UV) run --frozen python bench/prompt_build.py
	$(UV) run --frozen python bench/memory_rank.py
	$(UV) run --frozen python bench/characters_read.py
	$(UV) run --frozen python bench/tts_speech.py
	$(UV) run --frozen python bench/chat_limits.py
	$(UV) run --frozen python bench/conversations.py
	$(UV) run --frozen python bench/conversation_summaries.py
	$(UV) run --frozen python bench/identity.py
	$(UV) run --frozen python bench/gen3d.py
	$(UV) run --frozen python bench/soak.py

# Rewrite .env.example and docs/configuration.md from the settings classes.
config-docs:
	$(UV) run --frozen python -m avatar_devstack.config_docs

# Rewrite the gateway's routes (make run's routers.yml and services.yml, compose's labels, the
# Kubernetes IngressRoute) from the registry of apps (avatar_shared.registry).
routes:
	$(UV) run --frozen python -m avatar_devstack.routes

# The playground's browser libraries, from npm at the versions tools/playground-vendor's lock
# pins, into the edge's static files (committed: the page needs no npm and no CDN). A test
# checks the copies are the lock's.
PLAYGROUND_VENDOR := gateway/src/avatar_edge/playground/vendor
DRACO_FILES := draco_decoder.js draco_decoder.wasm draco_wasm_wrapper.js
BASIS_FILES := basis_transcoder.js basis_transcoder.wasm
vendor:
	npm ci --prefix tools/playground-vendor --no-audit --no-fund --loglevel=error
	cp tools/playground-vendor/node_modules/@google/model-viewer/dist/model-viewer.min.js $(PLAYGROUND_VENDOR)/
	cp tools/playground-vendor/node_modules/@google/model-viewer/LICENSE $(PLAYGROUND_VENDOR)/model-viewer.LICENSE
	@# model-viewer's decoders for Draco- and KTX2-compressed models (else fetched from Google's CDN)
	mkdir -p $(PLAYGROUND_VENDOR)/draco $(PLAYGROUND_VENDOR)/basis
	cp $(addprefix tools/playground-vendor/node_modules/three/examples/jsm/libs/draco/gltf/,$(DRACO_FILES)) $(PLAYGROUND_VENDOR)/draco/
	cp $(addprefix tools/playground-vendor/node_modules/three/examples/jsm/libs/basis/,$(BASIS_FILES)) $(PLAYGROUND_VENDOR)/basis/
	cp tools/playground-vendor/node_modules/three/LICENSE $(PLAYGROUND_VENDOR)/three.LICENSE

# The key files deploy/compose.yml and the Kubernetes Secret read (deploy/secrets/, git-ignored).
deploy-secrets:
	$(UV) run --frozen python -m avatar_devstack.deploy_secrets

clean:
	rm -rf var .pytest_cache .ruff_cache
