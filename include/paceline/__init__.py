"""Paceline: orchestrated sync and backfill pipelines for rate-limited APIs, on Apache Airflow 3."""

__version__ = "0.1.0"
