# One image for the API, the workers and Flower (docker-compose.yml). The locked versions, so the
# image runs what CI tested; every file the processes read at start; a non-root user.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.lock setup.cfg pyproject.toml README.md ./
COPY aurum aurum
COPY service service
COPY workers workers
COPY api api
# read from the working directory: Celery's settings and Flower's
COPY celeryconfig.py flowerconfig.py Procfile ./
RUN pip install --no-cache-dir -c requirements.lock -e . \
 && useradd --system --uid 10001 --no-create-home --home-dir /app aurum
USER aurum
# models/ is mounted read-only at /models (AURUM_MODELS_DIR); it is not baked into the image.
ENV AURUM_MODELS_DIR=/models
