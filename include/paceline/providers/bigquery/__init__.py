"""BigQuery over its REST API: hook (credentials from a ``google_cloud_platform`` connection) and
client (queries with named parameters, datasets, tables).

Why not ``google-cloud-bigquery``: a task process pays for every import, and that library loads
pandas and pyarrow helpers that Paceline never uses (about 0.8 s of CPU per task, twice per game
day; bench/README.md, NBA section). The few calls Paceline makes (jobs.query, getQueryResults,
jobs.get, datasets and tables) go through the shared :class:`paceline.http.session.ApiSession`
with ``google-auth`` credentials instead. Keep this package free of heavy imports.
"""

from paceline.providers.bigquery.client import BigQueryClient, BigQueryError, NotFound, QueryResult, Table
from paceline.providers.bigquery.hook import BigQueryRestHook

__all__ = ["BigQueryClient", "BigQueryError", "BigQueryRestHook", "NotFound", "QueryResult", "Table"]
