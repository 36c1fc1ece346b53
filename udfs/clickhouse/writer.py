"""Inserting a batch with retries: transient errors back off and retry, rejected rows are
isolated for the dead-letter queue, anything else is raised (no pyflink)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from udfs.clickhouse.errors import RowRejected, TransientStoreError
from udfs.clickhouse.schema import row_label

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for transient store errors.

    The n-th retry (0-based) sleeps ``rand() * min(cap_ms, base_ms * 2**n)`` ms.
    ``max_attempts`` counts insert attempts including the first; None retries forever, which
    is the default because a row must never be dropped for an outage.
    """

    base_ms: int = 100
    cap_ms: int = 10_000
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base_ms <= 0 or self.cap_ms < self.base_ms:
            raise ValueError(
                f"RetryPolicy needs 0 < base_ms <= cap_ms, got {self.base_ms}, {self.cap_ms}"
            )
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(
                f"RetryPolicy.max_attempts must be None or >= 1, got {self.max_attempts}"
            )


def backoff_ceiling_ms(retry_index: int, policy: RetryPolicy) -> int:
    """Upper bound of the ``retry_index``-th (0-based) backoff: min(cap, base * 2**index)."""
    # The exponent is clamped so a retry-forever loop never builds huge integers.
    return min(policy.cap_ms, policy.base_ms << min(retry_index, 62))


def backoff_ms(retry_index: int, policy: RetryPolicy, rand: Callable[[], float]) -> float:
    """Full-jitter backoff: uniformly spread over [0, ceiling) so writers do not retry in step."""
    return rand() * backoff_ceiling_ms(retry_index, policy)


OnRetry = Callable[[int, float, TransientStoreError], None]
# A row dict, or (``json_lines``) the row as one JSON text.
Row = Mapping[str, Any] | str


def write_batch(
    store: Any,
    table: str,
    rows: Iterable[Row],
    *,
    retry: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: OnRetry | None = None,
    json_lines: bool = False,
) -> list[tuple[Any, str]]:
    """Insert ``rows`` into ``table``; return the rejected rows as ``[(row, reason)]``.
    ``rows`` are dicts (:meth:`Store.insert_rows`) or, with ``json_lines``, JSON texts
    (:meth:`Store.insert_json_lines`).

    Transient errors are retried with backoff (``on_retry(attempt, delay_s, error)`` is told
    before each sleep) until ``retry.max_attempts``, then re-raised: nothing is dropped.
    Rejected content is isolated by bisection: the good rows are inserted, each bad row is
    returned once with its reason, for the caller's dead-letter queue. Any other StoreError is
    raised. Because every table deduplicates on its key, re-running a partly written batch
    after an exception is harmless.
    """
    rejected: list[tuple[Any, str]] = []
    stack = [list(rows)]
    while stack:
        batch = stack.pop()
        if not batch:
            continue
        try:
            _insert_retrying(store, table, batch, retry, sleep, rand, on_retry, json_lines)
        except RowRejected as exc:
            if exc.row_errors:
                # The bad rows are known and nothing was written: drop them, retry the rest.
                rejected.extend((batch[i], reason) for i, reason in sorted(exc.row_errors.items()))
                stack.append([row for i, row in enumerate(batch) if i not in exc.row_errors])
            elif len(batch) == 1:
                reason = f"{table} {row_label(table, batch[0])}: {exc}"
                logger.warning("ClickHouse rejected a row: %s", reason)
                rejected.append((batch[0], reason))
            else:
                middle = len(batch) // 2
                stack.append(batch[middle:])
                stack.append(batch[:middle])  # popped first: rows keep their order
    return rejected


def _insert_retrying(
    store: Any,
    table: str,
    batch: list[Row],
    policy: RetryPolicy,
    sleep: Callable[[float], None],
    rand: Callable[[], float],
    on_retry: OnRetry | None,
    json_lines: bool = False,
) -> None:
    insert = store.insert_json_lines if json_lines else store.insert_rows
    attempt = 0
    while True:
        attempt += 1
        try:
            insert(table, batch)
            return
        except TransientStoreError as exc:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise
            delay_s = backoff_ms(attempt - 1, policy, rand) / 1000.0
            logger.warning(
                "ClickHouse insert of %d row(s) into %s failed (attempt %d), "
                "retrying in %.3f s: %s",
                len(batch),
                table,
                attempt,
                delay_s,
                exc,
            )
            if on_retry is not None:
                on_retry(attempt, delay_s, exc)
            sleep(delay_s)
