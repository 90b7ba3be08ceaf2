# The image of everything Notify runs on Kubernetes (see notify_cli/deploy_templates.py):
#   Dagster code server: the Helm chart runs `dagster api grpc --module-name notify_assets.definitions` (the CMD here)
#   run pods:            the K8sRunLauncher runs `dagster api execute_run ...` in this same image
#   consumer:            deploy/k8s/consumer.yaml runs `notify consume`
# Build from the repository root:  docker build -f deploy/app.Dockerfile -t notify-app .
FROM python:3.11-slim

# The data directory (artefact cache, landing files before their push, the deployed_on marker) is scratch under
# /tmp: the WORKDIR is root's and the image runs as uid 10001; the consumer's read-only root mounts an emptyDir there.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 NOTIFY_ENV=aws DAGSTER_HOME=/opt/dagster/dagster_home \
    NOTIFY_DATA_DIR=/tmp/notify
WORKDIR /opt/notify
# CPU-only torch first (the default wheel pulls CUDA, ~2 GB more), then the project and its dependencies.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md workspace.yaml ./
COPY notify_core ./notify_core
COPY notify_assets ./notify_assets
COPY notify_resources ./notify_resources
COPY notify_sensors ./notify_sensors
COPY notify_cli ./notify_cli
COPY lambdas ./lambdas
RUN pip install --no-cache-dir . \
    && python -c "import notify_assets.definitions, dagster_postgres, dagster_k8s" \
    && mkdir -p "$DAGSTER_HOME" \
    && groupadd --system --gid 10001 notify \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/notify notify \
    && chown -R notify:notify "$DAGSTER_HOME"
USER 10001:10001
EXPOSE 3030
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "--module-name", "notify_assets.definitions"]
