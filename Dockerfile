# The duroot-stream app image: processor, runner and the command line.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY schemas ./schemas
COPY deploy/kafka ./deploy/kafka
RUN pip install --no-cache-dir .
USER nobody
ENTRYPOINT []
CMD ["duroot-stream", "--help"]
