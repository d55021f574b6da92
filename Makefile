# vLLM 0.19.1 multimodal overlay. The logic lives in vllm_overlay/ (via ./build.sh).
ARCH ?= x86_64
MODE ?= overlay
OVERLAY := ./build.sh
PYTHON ?= python3

.PHONY: wheel wheel-dry-run test-slow cross-check fetch apply export-patches check-patches test test-fast bench help publish docker

help:
	@$(OVERLAY) --help

wheel:            ## fetch (sha256-checked), apply the series, build + verify the wheel (MODE=overlay|precompiled|source)
	$(OVERLAY) wheel --arch $(ARCH) --mode $(MODE)

wheel-dry-run:    ## MODE=source preflight + the setup.py command it would run
	$(OVERLAY) wheel --arch $(ARCH) --mode source --dry-run

fetch:            ## only download + verify the pinned upstream artifacts
	$(OVERLAY) fetch --arch $(ARCH)

apply:            ## fresh work tree in work/tree: upstream + the series as git commits
	$(OVERLAY) apply

export-patches:   ## write the work tree's commits back to patches/ and patches/series
	$(OVERLAY) export

check-patches:    ## fail unless patches/ equals a fresh apply + export round trip
	$(OVERLAY) check-patches

test-fast:        ## tooling tests only
	$(OVERLAY) pytest tests/tooling -m "not slow"

test-slow:        ## minutes-long real builds: overlay vs vLLM's precompiled setup.py cross-check
	$(OVERLAY) pytest tests/tooling -m slow

cross-check:      ## diff the installed trees of the overlay and precompiled wheels in wheelhouse/
	$(OVERLAY) cross-check --arch $(ARCH)

bench:            ## printed figures: make wheel vs cp and a naive repack; overlay vs precompiled; encoder graphs
	$(PYTHON) benchmarks/bench_wheel.py
	$(PYTHON) benchmarks/bench_modes.py
	$(PYTHON) benchmarks/bench_encoder_graphs.py

test: check-patches  ## all CI runs: tooling, wheel, runtime venv, behaviour, upstream subset (reports/)
	$(OVERLAY) test --arch $(ARCH)

# --- distribution: internal index + Docker image (vllm_overlay/publish.py, docker.py) ---
publish:          ## upload wheelhouse/ wheels: INDEX_URL=<upload URL> [SIMPLE_URL=] [WHEELHOUSE=]
	@test -n "$(INDEX_URL)" || { echo "error: make publish needs INDEX_URL=<upload URL>" >&2; exit 2; }
	$(OVERLAY) publish --index-url '$(INDEX_URL)' $(if $(SIMPLE_URL),--simple-url '$(SIMPLE_URL)') \
	  $(if $(WHEELHOUSE),--wheelhouse '$(WHEELHOUSE)')

docker:           ## build the image: [ARCH=] [IMAGE=] [MODE=source TORCH_CUDA_ARCH_LIST= MAX_JOBS=]
	$(OVERLAY) docker --arch $(ARCH) $(if $(MODE),--mode $(MODE)) $(if $(IMAGE),--image '$(IMAGE)') \
	  $(if $(TORCH_CUDA_ARCH_LIST),--build-arg 'TORCH_CUDA_ARCH_LIST=$(TORCH_CUDA_ARCH_LIST)') \
	  $(if $(MAX_JOBS),--build-arg 'MAX_JOBS=$(MAX_JOBS)')

# --- upstream releases: patch x release matrix and bisect (vllm_overlay/upstream_cli.py) ---
# CMD goes to the recipe through the environment, unexpanded, so its quotes and $VARS survive.
export BISECT_CMD := $(value CMD)
PATCHES ?= patches
STATUS_OUT ?= reports
CHECK ?= apply
.PHONY: status bisect bench-status

status:           ## patch x release matrix -> reports/status.{md,json} [RELEASES=A..B|A,B PATCHES=dir]
	$(OVERLAY) status --patches $(PATCHES) --out $(STATUS_OUT) $(if $(RELEASES),--releases $(RELEASES))

bisect:           ## first failing release: GOOD=<tag> BAD=<tag> [CHECK=apply|test CMD='...']
	$(OVERLAY) bisect --patches $(PATCHES) --check $(CHECK) $(if $(GOOD),--good $(GOOD)) \
	  $(if $(BAD),--bad $(BAD)) $(if $(CMD),--cmd "$$BISECT_CMD")

bench-status:     ## time `status` per release, pin..newest, warm cache (prints figures)
	$(PYTHON) benchmarks/bench_status.py --patches $(PATCHES)
