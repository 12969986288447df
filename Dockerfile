# signoff's container image.
#
#   docker build -t signoff .
#   docker run -p 8080:8080 -v signoff-data:/data \
#     -v "$PWD/signoff.yaml:/config/signoff.yaml:ro" --env-file .env signoff
#
# The workflow file is read from /config/signoff.yaml (SIGNOFF_CONFIG); the SQLite database
# (the default store) lives in the /data volume. For PostgreSQL set SIGNOFF_DATABASE_URL to a
# postgresql+psycopg:// URL. The process runs as uid/gid 10001 and writes nowhere but /data
# (SQLite only) and /tmp. See docs/deploy.md.

# --- build: a virtualenv with signoff and its pinned dependencies ---------------------------
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/signoff
COPY constraints.txt pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/signoff/bin/pip install --no-cache-dir --constraint constraints.txt '.[postgres]'

# --- runtime ----------------------------------------------------------------------------------
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/signoff/bin:$PATH \
    SIGNOFF_DATABASE_URL=sqlite:////data/signoff.db \
    SIGNOFF_CONFIG=/config/signoff.yaml

RUN groupadd --system --gid 10001 signoff \
    && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin signoff \
    && mkdir -p /data /config \
    && chown 10001:10001 /data

COPY --from=build /opt/signoff /opt/signoff

USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"]

CMD ["signoff", "serve", "--host", "0.0.0.0", "--port", "8080"]
