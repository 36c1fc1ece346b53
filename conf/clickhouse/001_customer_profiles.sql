-- One full profile snapshot per change, written by the job's ClickHouse writer.
-- ReplacingMergeTree(version) keeps the row with the highest version per customer_id
-- once parts merge; `version` strictly increases per customer, so re-inserting the same
-- snapshots (replay after a restore) or inserting them out of order is harmless.
-- Before merges several versions coexist: read through customer_profiles_latest.
CREATE TABLE IF NOT EXISTS customer_profiles
(
    customer_id          String,
    email                Nullable(String),
    first_name           Nullable(String),
    locale               Nullable(String),
    timezone             Nullable(String),
    first_seen           DateTime64(3, 'UTC'),
    last_seen            DateTime64(3, 'UTC'),
    event_counts         Map(String, UInt64),
    revenue_total        Float64,
    order_count          UInt64,
    avg_order_value      Float64,
    last_purchase_at     Nullable(DateTime64(3, 'UTC')),
    recent_products      Array(String),
    favourite_categories Array(String),
    cart_value           Float64,
    cart_items           UInt32,
    journey_status       LowCardinality(String),
    emails_sent          UInt32,
    unsubscribed         Bool,
    updated_at           DateTime64(3, 'UTC'),
    version              UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY customer_id;
