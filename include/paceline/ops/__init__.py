"""Operating Paceline: what `paceline status`, `quota` and `integrations` read and write.

Every function takes an open warehouse connection (psycopg) and returns plain, JSON-safe dicts,
so the CLI and the Airflow UI plugin show the same figures.
"""
