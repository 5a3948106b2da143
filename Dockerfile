# Florence vision app. docs/DEPLOY.md has the full story (compose, GPUs, offline models, workers).
#
#   GPU image (default; CUDA build of PyTorch, needs an NVIDIA driver for CUDA 13, i.e. >= 580):
#     docker build -t florence-vision .
#     docker run --gpus all -p 8010:8010 -v florence-data:/data florence-vision
#   CPU image (no CUDA libraries, several GB smaller):
#     docker build -t florence-vision:cpu --build-arg TORCH_VARIANT=cpu .
#     docker run -p 8010:8010 -v florence-data:/data florence-vision:cpu
#
# Layers, slowest-changing first: system packages, torch, the locked dependencies
# (requirements.lock), then the code, so a code change rebuilds in seconds.
# BASE_IMAGE: any Debian/Ubuntu image with python3.11 and its venv module (CI builds one with
# debootstrap when no registry is reachable). CA certificates in docker/certs/*.crt are trusted
# (the system bundle is used by pip and, at run time, by the model hub client and URL fetching).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

# cuda | cpu
ARG TORCH_VARIANT=cuda
ARG TORCH_VERSION=2.13.0
# Where the CPU build comes from; empty: only wheels in docker/wheels/.
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    HF_HOME=/data/hf \
    DATA_DIR=/data/app \
    HOST=0.0.0.0 \
    PORT=8010

COPY docker/certs/ /usr/local/share/ca-certificates/extra/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates fonts-dejavu-core libgomp1 \
    && rm -rf /var/lib/apt/lists/* /usr/local/share/ca-certificates/extra/README.md \
    && update-ca-certificates \
    && python3 -m venv "$VIRTUAL_ENV"

COPY docker/wheels/ /tmp/wheels/
RUN set -eu; \
    case "$TORCH_VARIANT" in \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      cpu) pip install --find-links /tmp/wheels ${TORCH_CPU_INDEX:+--extra-index-url "$TORCH_CPU_INDEX"} \
             "torch==${TORCH_VERSION}+cpu" ;; \
      *) echo "TORCH_VARIANT must be cuda or cpu, not '$TORCH_VARIANT'" >&2; exit 1 ;; \
    esac; \
    rm -rf /tmp/wheels

COPY requirements.lock /tmp/requirements.lock
RUN pip install -r /tmp/requirements.lock

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY logging_config.py chainlit_app.py chainlit.md ./
COPY public ./public
COPY .chainlit ./.chainlit
# --no-deps: everything is already installed from the lock. Chainlit writes uploads (.files) and
# translations (.chainlit/) next to the app, so the user owns /app.
RUN pip install --no-deps . \
    && useradd --create-home --uid 1000 florence \
    && mkdir -p /data/hf /data/app \
    && chown -R florence /data /app

USER florence
VOLUME ["/data"]
EXPOSE 8010
# Ready, not just alive: a container whose model failed to load is unhealthy. The start period
# covers the first start's model download.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/readyz', timeout=4)"
CMD ["python", "-m", "app", "serve"]
