# logiwatch: one image for every process (worker, ticker, alert service,
# simulator); docker-compose.yml picks the subcommand. Non-root, no build
# tools in the final image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY detectors ./detectors
COPY streams ./streams
COPY alerts ./alerts
COPY bench ./bench
COPY sim ./sim
# Wheels for the project and all its dependencies, so the runtime stage
# installs offline and without compilers.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 logiwatch \
    && useradd --system --uid 10001 --gid logiwatch --home-dir /home/logiwatch --create-home logiwatch
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels logiwatch && rm -rf /wheels
USER logiwatch
WORKDIR /home/logiwatch
# worker metrics, alert-service metrics, alert-service API / CS board
EXPOSE 9108 9109 8088
ENTRYPOINT ["logiwatch"]
CMD ["--help"]
