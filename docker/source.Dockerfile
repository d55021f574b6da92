# Optional: build vLLM from source with the series applied (VLLM_USE_PRECOMPILED=0), for
# CUDA architectures upstream's binaries do not cover, then install it over upstream's
# serving image like ./Dockerfile does. `make docker MODE=source TORCH_CUDA_ARCH_LIST=...
# MAX_JOBS=...` passes the arguments (VERSION / lock / series agree by construction).
# Slow: a full CUDA compile of vLLM (hours on few cores). Needs BuildKit and network access
# to the package index (the pinned sdist, torch and the build requirements).
ARG CUDA_DEVEL_IMAGE=nvidia/cuda:12.9.1-devel-ubuntu24.04
ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v0.19.1

FROM ${CUDA_DEVEL_IMAGE} AS wheel-build
# Upstream's release builds for '7.0 7.5 8.0 8.9 9.0 10.0 12.0'; set what you need.
ARG TORCH_CUDA_ARCH_LIST="8.0 8.9 9.0 10.0 12.0"
ARG MAX_JOBS=4
ENV VLLM_USE_PRECOMPILED=0 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev git make g++ ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . /src
# The series is applied and compiled by the project's own build (one code path).
RUN make wheel MODE=source

FROM ${VLLM_BASE_IMAGE}
ARG VLLM_BASE_IMAGE
ARG UPSTREAM_VERSION=0.19.1
ARG OVERLAY_VERSION=0.19.1+mmcg.2
ARG SERIES_SHA256=
ARG SOURCE_URL=
ARG VCS_REF=
ARG TORCH_CUDA_ARCH_LIST
LABEL org.opencontainers.image.title="vllm-overlay" \
      org.opencontainers.image.description="vLLM ${UPSTREAM_VERSION} with the multimodal CUDA-graph patch series, built from source" \
      org.opencontainers.image.version="${OVERLAY_VERSION}" \
      org.opencontainers.image.base.name="${VLLM_BASE_IMAGE}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      io.vllm-overlay.upstream-version="${UPSTREAM_VERSION}" \
      io.vllm-overlay.series-sha256="${SERIES_SHA256}" \
      io.vllm-overlay.torch-cuda-arch-list="${TORCH_CUDA_ARCH_LIST}"
# The compiled wheel differs from upstream's binaries, so here every file is rewritten.
RUN --mount=type=bind,from=wheel-build,source=/src,target=/mnt/overlay \
    set -- /mnt/overlay/wheelhouse/vllm-*.whl \
    && test "$#" -eq 1 \
    && python3 /mnt/overlay/vllm_overlay/publishing/in_image/overlay_install.py "$1" \
    && python3 /mnt/overlay/vllm_overlay/publishing/in_image/image_check.py --version "${OVERLAY_VERSION}" --import
ENV VLLM_OVERLAY_HEALTH_PORT=8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['VLLM_OVERLAY_HEALTH_PORT'], timeout=4)"]
