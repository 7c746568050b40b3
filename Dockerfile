# The rtsim image for docker-compose.yml's replay and learner services.
#
#   docker compose build                                    # torch from PyPI (CUDA build, ~2.5 GB)
#   docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#                                                           # CPU-only torch, a much smaller image
# (or set TORCH_INDEX_URL in .env). rtsim runs on CPU by default either way.
FROM python:3.11-slim

# Keep in step with the torch pin in pyproject.toml (tests/test_dashboards.py checks it).
ARG TORCH_VERSION=2.9.1
ARG TORCH_INDEX_URL=

# PYTHONPATH: run from the source tree (the installed copy is the same code; presets are
# package data of replay_data either way).
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONPATH=/app

WORKDIR /app

# torch first, from another index when asked: `pip install .` below then finds the pin
# satisfied (a +cpu local version matches torch==X.Y.Z) and keeps it.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"; \
    fi

# The dependencies in a layer of their own, so code changes do not download them again:
# install the project with empty packages, then drop the project itself.
COPY pyproject.toml README.md ./
RUN mkdir -p replay_data simulator learner \
    && touch replay_data/__init__.py simulator/__init__.py learner/__init__.py \
    && pip install . \
    && pip uninstall -y rtsim \
    && rm -rf replay_data simulator learner build rtsim.egg-info

COPY replay_data ./replay_data
COPY learner ./learner
COPY simulator ./simulator
RUN pip install --no-deps . && rm -rf build rtsim.egg-info && rtsim --help >/dev/null

# ./data (raw and prepared logs) and ./runs (run directories) are bind-mounted here by
# docker-compose.yml.
VOLUME ["/data", "/runs"]
# learner metrics and control API; producer metrics and control API
EXPOSE 9108 8765 9109 8766

CMD ["rtsim", "--help"]
