# breakglass: runs the database migrations, then `breakglass serve` on port 3000.
# Not built in CI (no Docker engine there); kept plain and standard on purpose.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BREAKGLASS_CONFIG=/etc/breakglass/breakglass.yml \
    DATABASE_URL=sqlite:////var/lib/breakglass/breakglass.db

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY providers ./providers
RUN pip install . && rm -rf /src

RUN useradd --system --uid 10001 --home-dir /var/lib/breakglass --create-home breakglass \
    && mkdir -p /etc/breakglass && chown breakglass /var/lib/breakglass
USER breakglass
WORKDIR /var/lib/breakglass
# `breakglass reload` (docker exec) finds the server here.
ENV BREAKGLASS_PID_FILE=/tmp/breakglass.pid

EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/healthz', timeout=4)"]

# Migrate as its own step (fails loudly), then serve without migrating again.
CMD ["sh", "-c", "breakglass migrate && exec breakglass serve --no-migrate --host 0.0.0.0 --port 3000"]
