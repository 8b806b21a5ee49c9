"""The Racing API: hook, client and payload parsing."""
