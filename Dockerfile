FROM python:3.11-slim
WORKDIR /app
COPY setup.cfg pyproject.toml README.md celeryconfig.py flowerconfig.py ./
COPY aurum aurum
COPY service service
COPY workers workers
COPY api api
RUN pip install --no-cache-dir -e .
# models/ is mounted read-only at /models (AURUM_MODELS_DIR); it is not baked into the image.
ENV AURUM_MODELS_DIR=/models
