"""The fleet: many hosts, one runbook (see aios_lib/fleet/run.py)."""
