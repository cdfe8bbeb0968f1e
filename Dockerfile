# mpi service image: slim Python, non-root user, the data directory as a volume, one worker
# (DuckDB allows one writer process per registry file, so `mpi serve` runs exactly one).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MPI_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mpi ./mpi
COPY api ./api
COPY linkage_models ./linkage_models
RUN pip install . && useradd --system --uid 10001 --home-dir /data mpi \
    && mkdir -p /data && chown mpi /data
USER mpi
VOLUME ["/data"]
EXPOSE 8443
# HTTPS with a self-signed CA generated in /data/tls on first start (its path is printed), or
# mount real certificates and add: --tls-cert /certs/server.pem --tls-key /certs/server.key
CMD ["mpi", "serve", "--host", "0.0.0.0", "--port", "8443", "--data-dir", "/data"]
