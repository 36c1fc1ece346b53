"""The ClickHouse writer: a thin PyFlink wrapper over :mod:`udfs.clickhouse`.

Keyed by shard number. Pending rows live in Flink ``ListState`` (never only in a Python
list), so a completed checkpoint covers every row not yet inserted (docs/DESIGN.md#python-sink).
A flush is one synchronous batched insert per table, when ``flush_rows`` rows are pending or
``flush_interval`` has passed (processing time), and at the end of a bounded input (an
event-time timer at the end of time). The state is cleared only after the inserts
succeeded; a restore replays at worst rows that the ReplacingMergeTree tables absorb.

Transient failures are retried with backoff inside ``write_batch`` while the operator
holds its rows, so a ClickHouse outage backpressures the job instead of losing rows. Rows
that ClickHouse rejects for their content are emitted as DLQ records (main output).
"""

from __future__ import annotations

import logging
import shutil
from collections import deque
from pathlib import Path

import orjson
from pyflink.common import Row, Types
from pyflink.datastream.functions import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ListStateDescriptor

from udfs import logs, paths
from udfs.clickhouse.client import get_client
from udfs.clickhouse.errors import StoreError, TransientStoreError
from udfs.clickhouse.writer import RetryPolicy, write_batch
from udfs.clock import MAX_WATERMARK, wall_ms
from udfs.core import contract
from udfs.core.contract import PROCESSING_ERROR, STORE_REJECTED
from udfs.core.validation import Invalid, dlq_record
from udfs.flink import metrics as flink_metrics

log = logging.getLogger("inboxflow")

PENDING_STATE = "pending_rows"


def _customer_of(row_json: str) -> str | None:
    try:
        row = orjson.loads(row_json)
    except orjson.JSONDecodeError:
        return None
    return row.get("customer_id") if isinstance(row, dict) else None


class FreshnessWindow:
    """Profile freshness samples (ms) of the last ``size`` profile rows, summarized after
    each flush and pushed to Java-side gauges (``udfs.flink.metrics``). A Flink distribution
    metric would be a call into the JVM per row, made while holding the interpreter lock that
    the customer function needs; adding samples here is a deque extend per flush."""

    STATS = ("p50", "p95", "p99", "max")

    def __init__(self, size: int = 10_000):
        self.samples: deque[int] = deque(maxlen=size)
        self.count = 0  # samples ever added
        self.last = 0
        self._summary: tuple[int, dict[str, int]] = (0, dict.fromkeys(self.STATS, 0))

    def add(self, samples: list[int]) -> None:
        if samples:
            self.samples.extend(samples)
            self.count += len(samples)
            self.last = samples[-1]

    def stat(self, name: str) -> int:
        """``p50``/``p95``/``p99`` (nearest rank) or ``max`` of the window; 0 when empty."""
        count, summary = self._summary
        if count != self.count:
            ordered = sorted(self.samples)  # one C call: atomic under the interpreter lock
            n = len(ordered)
            summary = {f"p{q}": ordered[max(1, -(-q * n // 100)) - 1] for q in (50, 95, 99)}
            summary["max"] = ordered[-1]
            self._summary = (self.count, summary)
        return summary[name]


class WriterFunction(KeyedProcessFunction):
    """State per shard: ``pending_rows`` (one entry per element received: the store rows of
    one or more events, :mod:`udfs.core.contract`; the only copy of every row not yet
    inserted), cleared after every successful flush. Rows go to ClickHouse as the JSON the
    customer function wrote, parsed by the engine (``Store.insert_json_lines``): no JSON
    work per row in Python.

    The pending count and the pending processing-time timer are kept in plain dicts: each
    is derived from state (after a restore the count is recomputed from ``pending_rows`` and
    Flink re-fires the restored timers), and in thread mode every state call is a trip into
    the JVM, which is what limits throughput."""

    def __init__(
        self,
        dsn: str,
        ddl_dir: Path,
        flush_rows: int,
        flush_interval_ms: int,
        freshness_log: str | None = None,
        log_level: str = "INFO",
        log_format: str = "json",
    ):
        self.log_level = log_level
        self.log_format = log_format
        self.dsn = dsn
        # the migrations travel with the function (udfs/paths.py): applied in open()
        self.ddl_files = paths.snapshot(ddl_dir, "*.sql")
        self.flush_rows = flush_rows
        self.flush_interval_ms = flush_interval_ms
        self.freshness_log = freshness_log

    def open(self, runtime_context: RuntimeContext) -> None:
        logs.configure_in_taskmanager(self.log_level, self.log_format)
        # hosted: the chdb engine must not run inside the JVM (udfs/clickhouse/host.py)
        self.store = get_client(self.dsn, hosted=True)
        ddl = paths.materialize(self.ddl_files)
        try:
            # Open the engine now, not with the first rows: starting the chdb host takes
            # about a second, which would otherwise age the first second of profiles. The
            # migrations are normally applied already (job.main.prepare_store); they are
            # applied here too for when the submitting client could not open the path.
            self.store.migrate(ddl)
        except TransientStoreError as exc:  # the first flush retries it
            log.warning(
                "ClickHouse not reachable at start-up, will retry: %s",
                exc,
                extra=logs.fields(error=type(exc).__name__),
            )
        finally:
            shutil.rmtree(ddl, ignore_errors=True)
        self.pending = runtime_context.get_list_state(
            ListStateDescriptor(PENDING_STATE, Types.STRING())
        )
        self._counts: dict[int, int] = {}  # shard -> rows in pending_rows
        self._timers: dict[int, int] = {}  # shard -> due time of its flush timer
        metrics = runtime_context.get_metrics_group()
        self.rows_written = metrics.counter("store_rows_written")
        self.rows_rejected = metrics.counter("store_rows_rejected")
        self.retries = metrics.counter("store_insert_retries")
        # the job's own group (README "Metrics"): rows written per table, insert retries
        self._group = metrics.add_group("inboxflow")
        self._written_by_table: dict[str, flink_metrics.Counter] = {}
        self._group_retries = self._group.counter("store_retries")
        self.freshness = FreshnessWindow()
        # set after each flush on the task thread, read by Flink without calling Python
        self._freshness_gauges = {
            name: flink_metrics.level(metrics, f"profile_freshness_{name}")
            for name in ("last_ms", "rows", *(f"{stat}_ms" for stat in FreshnessWindow.STATS))
        }
        # open for the operator's lifetime, closed in close()
        self._freshness_out = (
            open(self.freshness_log, "a")  # noqa: SIM115
            if self.freshness_log
            else None
        )

    def close(self) -> None:
        if self._freshness_out:
            self._freshness_out.close()
        self.store.close()

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        shard, rows = value
        self.pending.add(rows)
        count = self._counts.get(shard)
        if count is None:  # first element since a (re)start: count what the state holds
            count = sum(contract.count_store_rows(entry) for entry in self.pending.get())
        else:
            count += contract.count_store_rows(rows)
        if count >= self.flush_rows:
            yield from self._flush(shard, ctx)
            return
        self._counts[shard] = count
        if shard not in self._timers:
            due = ctx.timer_service().current_processing_time() + self.flush_interval_ms
            ctx.timer_service().register_processing_time_timer(due)
            self._timers[shard] = due
            # fires only when a bounded input ends, so its last rows are written too
            ctx.timer_service().register_event_time_timer(MAX_WATERMARK)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        shard = ctx.get_current_key()
        if self._timers.get(shard) == timestamp:
            del self._timers[shard]
        yield from self._flush(shard, ctx)

    def _flush(self, shard: int, ctx):
        by_table, sources, bad = contract.group_store_rows(self.pending.get())
        for line, why in bad:
            # not a store row (a bug, or pending rows restored from a job whose store rows
            # had another shape): the DLQ keeps the line, and the job goes on
            yield self._dead(None, line, PROCESSING_ERROR, why)
        self._counts.pop(shard, None)
        if not by_table and not bad:
            return  # nothing pending; lines sent to the DLQ are cleared like written rows
        for table, rows in by_table.items():
            try:
                rejected = write_batch(
                    self.store,
                    table,
                    rows,
                    retry=RetryPolicy(),
                    on_retry=self._on_retry,
                    json_lines=True,
                )
            except StoreError:
                raise  # the store itself failed (not a row): restart from the checkpoint
            except Exception as exc:  # noqa: BLE001 - the firewall: content, not infrastructure
                log.error(
                    "writing rows failed; rows sent to the DLQ",
                    extra=logs.fields(
                        table=table,
                        rows=len(rows),
                        reason=PROCESSING_ERROR,
                        error=type(exc).__name__,
                    ),
                )
                rejected = [
                    (row_json, f"{type(exc).__name__} while writing to ClickHouse")
                    for row_json in rows
                ]
                reason = PROCESSING_ERROR
            else:
                reason = STORE_REJECTED
            self.rows_written.inc(len(rows) - len(rejected))
            written = self._written_by_table.get(table)
            if written is None:
                written = self._written_by_table[table] = self._group.add_group(
                    "table", table
                ).counter("rows_written")
            written.inc(len(rows) - len(rejected))
            for row_json, message in rejected:
                yield self._dead(table, row_json, reason, message)
        committed = wall_ms()
        self._record_freshness([committed - s for s in sources if s > 0])
        self.pending.clear()
        due = self._timers.pop(shard, None)
        if due is not None:
            ctx.timer_service().delete_processing_time_timer(due)

    def _dead(self, table: str | None, row_json: str, reason: str, message: str) -> Row:
        """The DLQ record for a row that was not written (the row itself is the payload,
        for a replay); ``table`` None: a line that is no store row (the line is the
        payload)."""
        self.rows_rejected.inc()
        customer = _customer_of(row_json)
        log.error(
            "store rejected row",
            extra=logs.fields(table=table, customer_id=customer, reason=reason),
        )
        path = "$" if table is None else f"$.{table}"
        record = dlq_record(
            row_json,
            Invalid(reason, path, message, None, customer),
            wall_ms(),
            contract.MAX_DLQ_PAYLOAD_BYTES,
        )
        _, _, key, value = contract.encode_dlq(record)
        return Row(key, value)

    def _record_freshness(self, samples: list[int]) -> None:
        self.freshness.add(samples)
        if samples:
            gauges = self._freshness_gauges
            gauges["last_ms"](self.freshness.last)
            gauges["rows"](self.freshness.count)
            for stat in FreshnessWindow.STATS:
                gauges[f"{stat}_ms"](self.freshness.stat(stat))
        if samples and self._freshness_out:
            self._freshness_out.write("\n".join(map(str, samples)) + "\n")
            self._freshness_out.flush()

    def _on_retry(self, attempt: int, delay_s: float, error: Exception) -> None:
        self.retries.inc()
        self._group_retries.inc()
        log.warning(
            "store insert failed, will retry: %s",
            error,
            extra=logs.fields(
                attempt=attempt, delay_s=round(delay_s, 3), error=type(error).__name__
            ),
        )
