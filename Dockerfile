# syntax=docker/dockerfile:1
# potsandbox service image. Isolation inside a default Docker/Kubernetes container:
# seccomp + Landlock + rlimits (namespaces need --security-opt seccomp=unconfined or a
# user-namespace-enabled runtime; cgroups are read-only, so bound threads with
# --pids-limit or podPidsLimit; see README "Deployment").

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/potsandbox
COPY pyproject.toml README.md LICENSE ./
COPY executor ./executor
COPY client ./client
COPY proto ./proto
RUN /opt/potsandbox/bin/pip install ".[server]"

FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.* libseccomp2=2.5.* \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin potsandbox
COPY --from=build /opt/potsandbox /opt/potsandbox
ENV PATH=/opt/potsandbox/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    POTSANDBOX_HOST=0.0.0.0 \
    POTSANDBOX_PORT=50051
USER 10001
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "potsandbox.executor.probe"]
# A non-loopback bind needs POTSANDBOX_TOKEN (or TLS flags, or --insecure behind a
# private network); without one the server refuses to start and says why.
ENTRYPOINT ["tini", "--", "potsandbox", "serve"]
