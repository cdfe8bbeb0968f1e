# mpi service image: slim Python, non-root user, data directory as a volume, one worker
# (DuckDB allows one writer process per registry file).
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
# One worker per registry file. `mpi serve` (HTTPS) replaces this with the service issue.
CMD ["uvicorn", "api.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8443", \
     "--workers", "1"]
