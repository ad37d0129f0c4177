"""DLI batch-job states. Their own module, free of imports, so that operators can check them while a DAG
file is parsed without loading the hook (and ``requests``)."""

from __future__ import annotations

LIVE_STATES = frozenset({"starting", "running", "recovering"})
TERMINAL_STATES = frozenset({"success", "dead"})
"""``success`` (the console's Finished) and ``dead`` (Failed, and what a cancelled job becomes)."""
