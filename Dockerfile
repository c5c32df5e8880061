# otel-anomaly container image.
#
#   docker build -t otel-anomaly:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v otel-anomaly-state:/var/lib/otel-anomaly \
#       -p 4317:4317 -p 4318:4318 -p 9464:9464 otel-anomaly:0.1.0
#
# Two stages: the first builds the project's wheel, the second installs only that wheel (and
# its dependencies from the index) into a virtualenv; no source tree, compiler or build
# tool reaches the runtime image. tests/deploy/test_image_install.py runs these steps
# (wheel, install, entrypoint, health check) as a non-root user from a read-only directory.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY processors/ processors/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE}
# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (pip compiled the
# bytecode at install time). MPLCONFIGDIR: matplotlib (backtest --plot) caches fonts there.
# NUMBA_CACHE_DIR: the compiled scoring kernels are cached on the state volume. They are
# compiled once, at build time (below), for a generic CPU of the image's architecture
# (NUMBA_CPU_NAME: any host of it loads them; scoring costs about 3 % more CPU than code
# compiled for the host's own CPU), and each start copies what the volume lacks of them
# (OTEL_ANOMALY_KERNEL_SEED), so no start compiles them: not a new pod, not an emptyDir.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/var/lib/otel-anomaly/kernels \
    NUMBA_CPU_NAME=generic \
    OTEL_ANOMALY_KERNEL_SEED=/opt/otel-anomaly/kernels \
    PATH=/opt/otel-anomaly/bin:$PATH

COPY --from=build /dist/ /tmp/dist/
RUN python -m venv /opt/otel-anomaly \
    && /opt/otel-anomaly/bin/pip install --no-cache-dir /tmp/dist/otel_anomaly-*.whl \
    && rm -rf /tmp/dist

# The image's config: a container's localhost is its own, so listen on every interface, and
# checkpoint to the state volume. Mount your own file over it (keys merge over the built-in
# defaults, see `otel-anomaly check-config`); the Helm chart mounts its ConfigMap here.
RUN mkdir -p /etc/otel-anomaly && printf '%s\n' \
    'receivers:' \
    '  grpc: {endpoint: "0.0.0.0:4317"}' \
    '  http: {endpoint: "0.0.0.0:4318"}' \
    'exposition: {endpoint: "0.0.0.0:9464"}' \
    'state: {path: /var/lib/otel-anomaly/state.ckpt}' \
    > /etc/otel-anomaly/config.yaml

# The seed: every kernel the image's config uses, compiled (49 s on 2 cores) into the
# image's own folder, read-only at run time.
RUN NUMBA_CACHE_DIR=/opt/otel-anomaly/kernels \
    otel-anomaly compile-kernels --config /etc/otel-anomaly/config.yaml

# A fixed numeric uid/gid (the chart's runAsUser/fsGroup), so Kubernetes' runAsNonRoot can
# verify it and volume ownership is predictable.
RUN groupadd --system --gid 10001 otel-anomaly \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin otel-anomaly \
    && mkdir -p /var/lib/otel-anomaly \
    && chown 10001:10001 /var/lib/otel-anomaly
VOLUME ["/var/lib/otel-anomaly"]
USER 10001:10001
# Nothing is written to the working directory: it may stay read-only.
WORKDIR /

# OTLP/gRPC, OTLP/HTTP, and /metrics, /healthz, /readyz.
EXPOSE 4317 4318 9464

# slim has no curl: the venv's Python asks /readyz (exit 1 on a refused connection or a 503).
# The scoring kernels are loaded (from the seed: about 1 s; a config whose rules need other
# kernels, or another CPU name, compiles them at its first start: 49 s on a 2-core machine,
# benchmarks/kernel_startup.py) and the checkpoint restored before anything listens, hence
# the start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2).status != 200)"]

ENTRYPOINT ["otel-anomaly"]
CMD ["run", "--config", "/etc/otel-anomaly/config.yaml"]
