# syntax=docker/dockerfile:1
# The serving image: the serving install only (no torch, no transformers), the model repository,
# one process per container. Build: docker build -t lunaserve .   Run: docker run -p 8000:8000 lunaserve
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY lunaserve ./lunaserve
COPY service ./service
COPY models ./models
COPY loadtest ./loadtest
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/venv/bin/pip uninstall -y pip

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home lunaserve
COPY --from=build /opt/venv /opt/venv
COPY specs /app/specs
COPY repository /app/repository
WORKDIR /app
USER 10001
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LUNASERVE_REPOSITORY=/app/repository \
    LUNASERVE_HOST=0.0.0.0 \
    LUNASERVE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s --start-period=30s \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2).status != 200)"]
# ONNX Runtime threads follow the container's CPU limit (its cgroup quota): see service/runtime/cpus.py.
ENTRYPOINT ["lunaserve", "serve"]
