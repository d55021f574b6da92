# vLLM 0.19.1 multimodal overlay. The logic lives in vllm_overlay/ (via ./build.sh).
ARCH ?= x86_64
MODE ?= overlay
OVERLAY := ./build.sh
PYTHON ?= python3
# Every variable reaches the CLI as one shell word: $(call q,$(VAR)) single-quotes it (and
# its own single quotes), so ARCH='x86_64 --mode source' is an ARCH, never an option.
q = '$(subst ','\'',$(1))'
# A recipe is one line: make echoes it as the shell gets it (the optional arguments of the
# longer ones are spelled in *_args below, where a backslash-newline is just a space).

.PHONY: lock changelog wheel wheel-dry-run test-slow cross-check fetch apply export-patches check-patches test test-fast bench help publish docker

help:             ## this list (each target's ## text); ./build.sh --help lists the commands
	@awk -F':[^#]*## ' '/^[a-z][a-z-]*:[^=]*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

wheel:            ## fetch (sha256-checked), apply the series, build + verify the wheel (MODE=overlay|precompiled|source)
	$(OVERLAY) wheel --arch $(call q,$(ARCH)) --mode $(call q,$(MODE))

lock:             ## resolve locks/runtime-<arch>.txt + locks/test-<arch>.txt with hashes (uv; network)
	$(OVERLAY) lock --arch $(call q,$(ARCH))

changelog:        ## release notes since the previous version -> wheelhouse/CHANGES-<VERSION>.md, CHANGELOG.md [PREVIOUS=]
	$(OVERLAY) changelog --arch $(call q,$(ARCH)) $(if $(PREVIOUS),--previous $(call q,$(PREVIOUS)))

wheel-dry-run:    ## MODE=source preflight + the setup.py command it would run
	$(OVERLAY) wheel --arch $(call q,$(ARCH)) --mode source --dry-run

fetch:            ## only download + verify the pinned upstream artifacts
	$(OVERLAY) fetch --arch $(call q,$(ARCH))

apply:            ## fresh work tree in work/tree: upstream + the series as git commits
	$(OVERLAY) apply

export-patches:   ## write the work tree's commits back to patches/ and patches/series
	$(OVERLAY) export

check-patches:    ## fail unless patches/ equals a fresh apply + export round trip
	$(OVERLAY) check-patches

test-fast:        ## offline tooling tests on all cores: pytest tests/tooling -m "not slow and not network" -n auto (make test runs all)
	$(OVERLAY) pytest tests/tooling -m "not slow and not network" -n auto

test-slow:        ## minutes-long real builds: overlay vs vLLM's precompiled setup.py cross-check
	$(OVERLAY) pytest tests/tooling -m slow

cross-check:      ## diff the installed trees of the overlay and precompiled wheels in wheelhouse/
	$(OVERLAY) cross-check --arch $(call q,$(ARCH))

bench:            ## printed figures: make wheel vs cp and a naive repack; overlay vs precompiled; encoder graphs [SMOKE=1]
	$(PYTHON) benchmarks/bench_wheel.py $(if $(SMOKE),--smoke)
	$(PYTHON) benchmarks/bench_modes.py $(if $(SMOKE),--smoke)
	$(PYTHON) benchmarks/bench_encoder_graphs.py $(if $(SMOKE),--smoke)

test: check-patches  ## all CI runs: tooling, wheel, runtime venv, behaviour, upstream subset (reports/)
	$(OVERLAY) test --arch $(call q,$(ARCH))

# --- distribution: internal index + Docker image (vllm_overlay/publishing/) ---
publish:          ## upload wheelhouse/ wheels: INDEX_URL=<upload URL> [SIMPLE_URL=] [WHEELHOUSE=]
	@test -n $(call q,$(INDEX_URL)) || { echo "error: make publish needs INDEX_URL=<upload URL>" >&2; exit 2; }
	@$(OVERLAY) publish $(publish_args)
# (not echoed: a URL may carry a password; publish names the index itself, without one)
publish_args = --index-url $(call q,$(INDEX_URL)) $(if $(SIMPLE_URL),--simple-url $(call q,$(SIMPLE_URL)))\
  $(if $(WHEELHOUSE),--wheelhouse $(call q,$(WHEELHOUSE)))

docker:           ## build the image: [ARCH=] [IMAGE=] [MODE=source TORCH_CUDA_ARCH_LIST= MAX_JOBS=]
	$(OVERLAY) docker $(docker_args)
docker_args = --arch $(call q,$(ARCH)) $(if $(MODE),--mode $(call q,$(MODE)))$(if $(IMAGE), --image $(call q,$(IMAGE)))\
  $(if $(TORCH_CUDA_ARCH_LIST),--build-arg $(call q,TORCH_CUDA_ARCH_LIST=$(TORCH_CUDA_ARCH_LIST)))\
  $(if $(MAX_JOBS),--build-arg $(call q,MAX_JOBS=$(MAX_JOBS)))

# --- upstream releases: patch x release matrix and bisect (vllm_overlay/upstream/) ---
# CMD goes to the recipe through the environment, unexpanded, so its quotes and $VARS survive.
export BISECT_CMD := $(value CMD)
PATCHES ?= patches
STATUS_OUT ?= reports
CHECK ?= apply
.PHONY: status bisect bench-status

status:           ## patch x release matrix + drift -> reports/status.{md,json}, drift/ [RELEASES=A..B|A,B PATCHES=dir FAIL_ON_CHANGE=1]
	$(OVERLAY) status --patches $(call q,$(PATCHES)) --out $(call q,$(STATUS_OUT)) $(if $(RELEASES),--releases $(call q,$(RELEASES))) $(if $(FAIL_ON_CHANGE),--fail-on-change)

bisect:           ## first failing release: GOOD=<tag> BAD=<tag> [CHECK=apply|test CMD='...']
	$(OVERLAY) bisect $(bisect_args)
bisect_args = --patches $(call q,$(PATCHES)) --check $(call q,$(CHECK)) $(if $(GOOD),--good $(call q,$(GOOD)))\
  $(if $(BAD),--bad $(call q,$(BAD))) $(if $(CMD),--cmd "$$BISECT_CMD")

bench-status:     ## time `status` per release, pin..newest, warm cache, with/without drift (figures) [RELEASES=]
	$(PYTHON) benchmarks/bench_status.py --patches $(call q,$(PATCHES)) $(if $(RELEASES),--releases $(call q,$(RELEASES)))

# --- moving the pin: the series onto a newer upstream release (vllm_overlay/upstream/rebase.py) ---
.PHONY: rebase
rebase:           ## TO=<release>|latest: new pin, VERSION, locks/ (make lock), patches dropped/rebased, checked, wheel; CONTINUE=1 after a stop, ABORT=1 [RUNTIME_VENV=1]
	$(OVERLAY) rebase $(rebase_args)
rebase_args = $(if $(CONTINUE),--continue) $(if $(ABORT),--abort) $(if $(TO),--to $(call q,$(TO)))\
  --arch $(call q,$(ARCH)) $(if $(NO_WHEEL),--no-wheel) $(if $(RUNTIME_VENV),--runtime-venv)
