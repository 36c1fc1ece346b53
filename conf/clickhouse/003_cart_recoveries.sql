-- A purchase that followed at least one sent cart reminder. The job attributes it to the
-- LAST reminder sent before the purchase (reminder_step / reminder_request_id); earlier
-- reminders of the same cart get no credit. One row per (customer_id, order_id), so a
-- replayed purchase event collapses onto the same row.
CREATE TABLE IF NOT EXISTS cart_recoveries
(
    customer_id         String,
    cart_id             Nullable(String),
    order_id            String,
    reminder_step       UInt8,
    reminder_request_id String,
    reminded_at         DateTime64(3, 'UTC'),
    purchased_at        DateTime64(3, 'UTC'),
    revenue             Float64,
    currency            String,
    seconds_to_purchase Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (customer_id, order_id);
