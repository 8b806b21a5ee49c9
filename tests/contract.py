"""The names of the operator contract that tests check in more than one place."""

CONTRACT_DAG_IDS = frozenset({
    "runsignup_sync",
    "haku_sync",
    "haku_backfill",
    "nba_player_game_summary",
    "racing_masters",
    "racing_events",
    "racing_daily",
})
