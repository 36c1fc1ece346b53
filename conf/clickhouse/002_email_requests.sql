-- Every email request the job emitted to Kafka `email.requests`, sent or suppressed.
-- request_id is deterministic (same trigger -> same id, across restarts), so a replay
-- re-inserts identical rows; ReplacingMergeTree collapses them on the sorting key.
-- Until parts merge duplicates are visible: count with FINAL or uniqExact(request_id).
CREATE TABLE IF NOT EXISTS email_requests
(
    request_id  String,
    campaign    String,
    step        UInt8,
    customer_id String,
    status      LowCardinality(String),  -- 'sent' | 'suppressed'
    reason      String,                  -- '' when sent, e.g. 'no_email', 'unsubscribed'
    subject     String,
    due_at      DateTime64(3, 'UTC'),    -- event time at which the step became due
    emitted_at  DateTime64(3, 'UTC'),    -- wall clock when the job emitted it
    cart_id     Nullable(String),
    cart_value  Float64,
    currency    String
)
ENGINE = ReplacingMergeTree
ORDER BY request_id;
