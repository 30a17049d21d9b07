# One image for every service in docker-compose.yml: idemsweep (idemcore, the API, the
# workers, the `idem` CLI) with Ray and a CUDA build of torch for the GPU Ray workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN apt-get update \
 && apt-get install -y --no-install-recommends graphviz curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, in its own layer: PyPI's linux x86_64 wheel bundles CUDA for the GPU workers.
ARG TORCH_VERSION=2.13.0
RUN pip install "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY idemcore ./idemcore
COPY service ./service
COPY workers ./workers
COPY idemsweep ./idemsweep
COPY migrations ./migrations
COPY specs ./specs
RUN pip install .

RUN useradd --create-home --uid 1000 idem && mkdir -p /data && chown idem /data
USER idem
ENV IDEM_DATA_DIR=/data
# 8000: the API; 8265: the Ray dashboard; 6379: the Ray head (GCS)
EXPOSE 8000 8265 6379
CMD ["idem", "--help"]
