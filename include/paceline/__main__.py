from paceline.cli import main

raise SystemExit(main(local_env=True))
