-- Analyst views. Both read with FINAL, which deduplicates at query time, so they are
-- exact before background merges and duplicates from replays never double count.

-- Newest snapshot per customer: FINAL applies ReplacingMergeTree(version) semantics.
CREATE OR REPLACE VIEW customer_profiles_latest AS
SELECT
    customer_id, email, first_name, locale, timezone, first_seen, last_seen,
    event_counts, revenue_total, order_count, avg_order_value, last_purchase_at,
    recent_products, favourite_categories, cart_value, cart_items, journey_status,
    emails_sent, unsubscribed, updated_at, version
FROM customer_profiles FINAL;

-- Cart-reminder performance per (campaign, step).
-- Attribution: last reminder wins. A cart_recoveries row names the reminder that was the
-- last one SENT before the purchase (reminder_request_id, chosen by the job); the whole
-- recovery and its revenue count for that reminder's campaign and step only. Earlier
-- steps of the same cart get nothing, suppressed requests never get credit.
--   reminders_sent    = distinct request ids with status 'sent'
--   carts_recovered   = recoveries attributed to the step
--   recovery_rate     = carts_recovered / reminders_sent (0 when nothing was sent)
--   revenue_recovered = sum of the attributed purchases' revenue, summed as-is across
--                       currencies (group cart_recoveries by currency for mixed shops)
-- The campaign of a recovery comes from its reminder's email_requests row; a recovery
-- whose reminder row is missing appears under campaign '' instead of being dropped.
CREATE OR REPLACE VIEW recovery_summary_by_step AS
WITH
    sent AS
    (
        SELECT campaign, step, uniqExact(request_id) AS reminders_sent
        FROM email_requests FINAL
        WHERE status = 'sent'
        GROUP BY campaign, step
    ),
    recovered AS
    (
        SELECT
            ifNull(e.campaign, '') AS campaign,
            r.reminder_step AS step,
            count() AS carts_recovered,
            sum(r.revenue) AS revenue_recovered
        FROM cart_recoveries AS r FINAL
        LEFT JOIN
        (
            SELECT request_id, campaign FROM email_requests FINAL
        ) AS e ON e.request_id = r.reminder_request_id
        GROUP BY campaign, step
    )
SELECT
    campaign,
    step,
    reminders_sent,
    carts_recovered,
    if(reminders_sent = 0, 0, carts_recovered / reminders_sent) AS recovery_rate,
    revenue_recovered
FROM sent
FULL OUTER JOIN recovered USING (campaign, step)
ORDER BY campaign, step
-- pinned: the zero-filled outer join above relies on default (non-NULL) join values
SETTINGS join_use_nulls = 0;
