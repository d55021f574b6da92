# The overlay image: upstream's serving image for the pinned release plus our wheel.
# Build it with `make docker` (ARCH=, IMAGE=): the build arguments come from VERSION,
# upstream.lock.json and wheelhouse/manifest-<arch>.json, and the defaults below must
# agree with them (tests/tooling/test_docker.py). Needs BuildKit (Docker >= 23 default)
# for RUN --mount. For other CUDA architectures see docker/source.Dockerfile.
ARG VLLM_BASE_IMAGE=vllm/vllm-openai:v0.19.1
FROM ${VLLM_BASE_IMAGE}

ARG VLLM_BASE_IMAGE
ARG UPSTREAM_VERSION=0.19.1
ARG OVERLAY_VERSION=0.19.1+mmcg.2
ARG WHEEL=vllm-0.19.1+mmcg.2-cp38-abi3-manylinux_2_31_x86_64.whl
# The wheel's SBOM copy beside it in wheelhouse/ (the same bytes as the one inside it).
ARG SBOM=vllm-0.19.1+mmcg.2-cp38-abi3-manylinux_2_31_x86_64.cdx.json
# From the wheelhouse manifest; empty means "not built through make docker" (refused).
ARG WHEEL_SHA256=
ARG SERIES_SHA256=
ARG SBOM_SHA256=
ARG SOURCE_URL=
ARG VCS_REF=

LABEL org.opencontainers.image.title="vllm-overlay" \
      org.opencontainers.image.description="vLLM ${UPSTREAM_VERSION} with the multimodal CUDA-graph patch series" \
      org.opencontainers.image.version="${OVERLAY_VERSION}" \
      org.opencontainers.image.base.name="${VLLM_BASE_IMAGE}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      io.vllm-overlay.upstream-version="${UPSTREAM_VERSION}" \
      io.vllm-overlay.series-sha256="${SERIES_SHA256}" \
      io.vllm-overlay.wheel-sha256="${WHEEL_SHA256}" \
      io.vllm-overlay.sbom="/usr/share/vllm-overlay/vllm.cdx.json" \
      io.vllm-overlay.sbom-format="CycloneDX 1.6 JSON" \
      io.vllm-overlay.sbom-sha256="${SBOM_SHA256}"

# Install over upstream's vllm without dependencies, writing only the files whose bytes
# differ (the binaries are the same), so this layer holds just what the series changed.
# The wheel and the two scripts are bind-mounted from the build context, never copied
# into a layer. Then prove the result: our version and a symbol only the series adds.
# The SBOM goes to the path the io.vllm-overlay.sbom label names, and must equal the one
# the wheel installed into its dist-info (PEP 770 sboms/).
RUN --mount=type=bind,target=/mnt/overlay \
    test -n "${WHEEL_SHA256}" -a -n "${SERIES_SHA256}" \
    || { echo "error: build this image with 'make docker' (WHEEL_SHA256 / SERIES_SHA256 unset)" >&2; exit 1; } \
    && python3 /mnt/overlay/vllm_overlay/publishing/in_image/overlay_install.py \
        "/mnt/overlay/wheelhouse/${WHEEL}" --sha256 "${WHEEL_SHA256}" \
    && python3 /mnt/overlay/vllm_overlay/publishing/in_image/image_check.py --version "${OVERLAY_VERSION}" --import \
    && install -D -m 0644 "/mnt/overlay/wheelhouse/${SBOM}" /usr/share/vllm-overlay/vllm.cdx.json \
    && python3 -c "import hashlib, importlib.metadata as m, sys; \
data = open('/usr/share/vllm-overlay/vllm.cdx.json', 'rb').read(); \
own = m.distribution('vllm').read_text('sboms/vllm.cdx.json'); \
sys.exit(0 if own == data.decode() and hashlib.sha256(data).hexdigest() == sys.argv[1] \
         else 'error: the SBOM does not match the wheel or SBOM_SHA256')" "${SBOM_SHA256}"

# Upstream's ENTRYPOINT (`vllm serve`) is kept. The server port is 8000 unless the
# container is started with another --port: then set VLLM_OVERLAY_HEALTH_PORT too.
ENV VLLM_OVERLAY_HEALTH_PORT=8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['VLLM_OVERLAY_HEALTH_PORT'], timeout=4)"]
