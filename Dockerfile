FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres]' \
    && useradd --system --uid 10001 --home /data signoff \
    && mkdir -p /data && chown signoff /data

USER signoff
WORKDIR /data
ENV SIGNOFF_DATABASE_URL=sqlite:////data/signoff.db SIGNOFF_CONFIG=/config/signoff.yaml
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"
CMD ["signoff", "serve", "--host", "0.0.0.0", "--port", "8080"]
