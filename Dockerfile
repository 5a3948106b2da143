# GPU or CPU image: `docker build -t florence-vision . && docker run --gpus all -p 8010:8010 florence-vision`
# Model weights are downloaded on first start into the /data volume (mount it to keep them):
#   docker run --gpus all -p 8010:8010 -v florence-data:/data florence-vision
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/data/hf \
    DATA_DIR=/data/app \
    HOST=0.0.0.0 \
    PORT=8010

RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch from PyPI is the CUDA build (works on CPU too); installed first so its layer is cached.
RUN pip install "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY app ./app
COPY logging_config.py chainlit_app.py chainlit.md ./
COPY public ./public
COPY .chainlit ./.chainlit
# Chainlit writes uploads (.files) and translations (.chainlit/) next to the app, so the user owns /app.
RUN pip install . && useradd --create-home --uid 1000 florence && mkdir -p /data && chown -R florence /data /app

USER florence
VOLUME ["/data"]
EXPOSE 8010
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz')"
CMD ["python", "-m", "app", "serve"]
