"""The thin PyFlink wrappers: they move data between Flink state, timers and metrics and the
pure code in :mod:`udfs.core` and :mod:`udfs.clickhouse`, and nothing else."""
