# Image of one model version's inference service. Built in-cluster by a Kaniko-compatible
# builder from the deploy bundle Asgard writes (Dockerfile, requirements.txt, the package).
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY pyproject.toml README.md ./
COPY asgard_assets ./asgard_assets
RUN pip install --no-cache-dir --no-deps .
ENV ASGARD_MODEL_URI=${MODEL_URI}
EXPOSE 8000
CMD ["uvicorn", "asgard_assets.serving.app:app", "--host", "0.0.0.0", "--port", "8000"]
