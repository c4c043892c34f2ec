# syntax=docker/dockerfile:1
# One image for every tickpipe command: `docker run IMAGE produce alpaca`, `... process`,
# `... topics create`, `... emulate coinbase --host 0.0.0.0 --port 8765`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install tickpipe and its dependencies into a self-contained virtualenv ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/tickpipe
# Only what the wheel is built from: no tests, no deployment files, no local .env.
COPY pyproject.toml README.md ./
COPY tickpipe/ tickpipe/
COPY producers/ producers/
COPY processors/ processors/
COPY emulators/ emulators/
COPY schemas/ schemas/
RUN /opt/tickpipe/bin/pip install --no-compile . \
    && /opt/tickpipe/bin/python -m compileall -q /opt/tickpipe/lib

# --- runtime: the virtualenv on a clean slim base, run as an unprivileged user ---
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN groupadd --system --gid "${UID}" tickpipe \
    && useradd --system --uid "${UID}" --gid tickpipe --home-dir /var/lib/tickpipe \
       --no-create-home --shell /usr/sbin/nologin tickpipe \
    && install -d -o tickpipe -g tickpipe -m 0750 /var/lib/tickpipe
COPY --from=build /opt/tickpipe /opt/tickpipe
ENV PATH=/opt/tickpipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TICKPIPE_OPS_HOST=0.0.0.0 \
    TICKPIPE_OPS_PORT=9400
# Working directory for state a command keeps on disk (the Faust app's data directory);
# mount a volume here when the root filesystem is read-only.
WORKDIR /var/lib/tickpipe
USER ${UID}:${UID}
# /metrics, /healthz and /readyz of every long-running command.
EXPOSE 9400
# Health is checked by the orchestrator (compose healthcheck, Kubernetes probes) per command:
# one-shot commands such as `topics create` serve no ops port.
HEALTHCHECK NONE
ENTRYPOINT ["tickpipe"]
CMD ["--help"]
