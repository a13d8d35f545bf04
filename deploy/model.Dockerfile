# Image of one model version's inference service, built in-cluster (Kaniko-compatible
# executor or rootless BuildKit) from the deploy bundle Asgard writes: Dockerfile,
# requirements.txt (the runtime lock, no dev tools), the package, the Feast repo and the
# model version itself (model/: its ONNX form and input contract, resolved by the deploy step).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY asgard_assets ./asgard_assets
COPY feature_repo ./feature_repo
# bytecode now: at run time the root filesystem is read-only (and PYTHONDONTWRITEBYTECODE)
RUN python -m compileall -q asgard_assets feature_repo
# the version in the image (last: the layers above are shared by every version of the same
# code): a pod starts without MLflow or its artifact store, and serves the same model
# wherever it runs
COPY model ./model
# The package runs from /app (PYTHONPATH, not site-packages) so it finds feature_repo/ beside
# it; scratch state under /tmp: the pod's root filesystem is read-only.
ENV PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    ASGARD_PROFILE=k8s \
    ASGARD_MODEL_URI=${MODEL_URI} \
    ASGARD_MODEL_DIR=/app/model \
    ASGARD_HOME=/tmp/asgard \
    HOME=/tmp
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "uvicorn", "asgard_assets.serving.app:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
