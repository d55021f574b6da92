# vLLM 0.19.1 multimodal overlay. The logic lives in vllm_overlay/ (via ./build.sh).
ARCH ?= x86_64
OVERLAY := ./build.sh

.PHONY: wheel fetch apply export-patches check-patches test test-fast bench help

help:
	@$(OVERLAY) --help

wheel:            ## fetch (sha256-checked), apply the series, build + verify the wheel
	$(OVERLAY) wheel --arch $(ARCH)

fetch:            ## only download + verify the pinned upstream artifacts
	$(OVERLAY) fetch --arch $(ARCH)

apply:            ## fresh work tree in work/tree: upstream + the series as git commits
	$(OVERLAY) apply

export-patches:   ## write the work tree's commits back to patches/ and patches/series
	$(OVERLAY) export

check-patches:    ## fail unless patches/ equals a fresh apply + export round trip
	$(OVERLAY) check-patches

test-fast:        ## tooling tests only
	$(OVERLAY) pytest tests/tooling

test: check-patches  ## all CI runs: tooling, wheel, runtime venv, behaviour, upstream subset (reports/)
	$(OVERLAY) test --arch $(ARCH)
