# The duroot-stream app image: processor, runner and the command line.

# The wheel, its per-record core compiled with mypyc (hatch_build.py): needs a C compiler,
# which the image that runs it does without.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY src ./src
COPY schemas ./schemas
COPY deploy/kafka ./deploy/kafka
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; \
names = zipfile.ZipFile(glob.glob('/wheels/*.whl')[0]).namelist(); \
sys.exit(None if any(n.endswith('.so') for n in names) else 'the wheel is not compiled')"

FROM python:3.11-slim
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER nobody
ENTRYPOINT []
CMD ["duroot-stream", "--help"]
