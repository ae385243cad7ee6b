# analytics-mcp server image: MCP over streamable HTTP on 0.0.0.0:8000 (/mcp, /health, /metrics).
# Stage 1 builds the project and its dependencies into a virtualenv; stage 2 is the slim runtime.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p mcp_server analytics sessions resources prompts warehouse importers \
    && pip install --upgrade pip \
    && pip install .
COPY . .
RUN pip install --no-deps . && analytics-mcp --help > /dev/null

FROM python:3.11-slim AS runtime
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    ANALYTICS_MCP_HOME=/home/mcp/.analytics-mcp
# A fixed, unprivileged user: the server never needs root.
RUN groupadd --system --gid 10001 mcp \
    && useradd --system --uid 10001 --gid mcp --create-home --home-dir /home/mcp mcp
COPY --from=build /opt/venv /opt/venv
# The source tree ships too: the named SQL in sql/ is read from beside the packages at run time
# (PYTHONPATH=/app puts this tree ahead of the installed copy).
WORKDIR /app
COPY --chown=root:root . /app
RUN chmod 0755 /app/deploy/entrypoint.sh \
    && python -c "import warehouse.sql as s; s.load('schema')"
USER mcp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]
# SIGTERM drains in-flight calls (up to 20 s) before the process exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["analytics-mcp", "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "8000"]
