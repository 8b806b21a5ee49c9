"""The Paceline view inside the Airflow UI: queries (plain dicts), SVG charts, the page, the FastAPI app.

``plugins/paceline_ui.py`` mounts :data:`paceline.ui.app.app` under ``/paceline`` and adds it to
the Airflow nav bar; see docs/ui.md.
"""
