"""Watching the served model: its metrics read back, the daily health report, drift."""
