"""The ClickHouse side of the job, without pyflink, by concern.

- :mod:`~udfs.clickhouse.errors`: how failures are sorted (transient, rejected row, fatal);
- :mod:`~udfs.clickhouse.dsn`: DSNs (embedded chdb path or server URL);
- :mod:`~udfs.clickhouse.schema`: the tables and the conversion of one row;
- :mod:`~udfs.clickhouse.migrations`: ``conf/clickhouse/NNN_name.sql`` files;
- :mod:`~udfs.clickhouse.engine`: opening a client in this process;
- :mod:`~udfs.clickhouse.host`: the chdb engine in a child process (for the Flink JVM);
- :mod:`~udfs.clickhouse.client`: the shared connection per DSN and the ``Store`` handle;
- :mod:`~udfs.clickhouse.writer`: inserting a batch with retries.

Imports go one way: errors and dsn depend on nothing here; the host uses the engine; the
client uses everything but the writer.
"""
