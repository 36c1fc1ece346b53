"""Fixtures shared by every test layer (none yet). What tests build (events, records, time
constants, cores, rows) lives in ``tests/factories.py``."""
