-- Campaign views. Like 004_views.sql they read email_requests with FINAL: one row per
-- request_id, the LAST INSERTED one (006_campaign_guards.sql), i.e. the final state of each
-- campaign step. A step deferred and later sent counts once, as sent. Counts are
-- uniqExact(request_id), so they stay exact before merges and after replays.

-- Every decision, by its final outcome: one row per (campaign, step, status, reason).
CREATE OR REPLACE VIEW campaign_decisions AS
SELECT campaign, step, status, reason, uniqExact(request_id) AS requests
FROM email_requests FINAL
GROUP BY campaign, step, status, reason
ORDER BY campaign, step, status, reason;

-- One row per campaign (numbers of requests, i.e. of campaign steps, by final state):
--   sent              final status 'sent'
--   deferred          deferred at least once: final row with deferrals > 0 or still 'deferred'
--   waiting           final status 'deferred' (still due to be decided again)
--   suppressed        final status 'suppressed'
--   skipped           final status 'skipped'
--   recoveries        cart_recoveries attributed to a request of the campaign
--                     (reminder_request_id = request_id, last reminder wins as in
--                     recovery_summary_by_step)
--   revenue_recovered sum of their revenue, summed as-is across currencies
-- sent + waiting + suppressed + skipped = the campaign's requests; deferred overlaps them.
-- A campaign without recoveries shows 0 and 0.0; a recovery whose reminder row is missing
-- appears under campaign '' instead of being dropped (as in recovery_summary_by_step).
CREATE OR REPLACE VIEW campaign_summary AS
WITH
    decided AS
    (
        SELECT
            campaign,
            uniqExactIf(request_id, status = 'sent') AS sent,
            uniqExactIf(request_id, deferrals > 0 OR status = 'deferred') AS deferred,
            uniqExactIf(request_id, status = 'deferred') AS waiting,
            uniqExactIf(request_id, status = 'suppressed') AS suppressed,
            uniqExactIf(request_id, status = 'skipped') AS skipped
        FROM email_requests FINAL
        GROUP BY campaign
    ),
    recovered AS
    (
        SELECT
            ifNull(e.campaign, '') AS campaign,
            count() AS recoveries,
            sum(r.revenue) AS revenue_recovered
        FROM cart_recoveries AS r FINAL
        LEFT JOIN
        (
            SELECT request_id, campaign FROM email_requests FINAL
        ) AS e ON e.request_id = r.reminder_request_id
        GROUP BY campaign
    )
SELECT
    campaign,
    sent,
    deferred,
    waiting,
    suppressed,
    skipped,
    recoveries,
    revenue_recovered
FROM decided
FULL OUTER JOIN recovered USING (campaign)
ORDER BY campaign
-- pinned: the zero-filled outer join above relies on default (non-NULL) join values
SETTINGS join_use_nulls = 0;

-- Why steps were not sent: final status 'suppressed' or 'skipped', by (campaign, reason).
-- No reason is used by both statuses (006_campaign_guards.sql), so the reason says which
-- one; steps still deferred are not listed here (see campaign_summary.waiting).
CREATE OR REPLACE VIEW campaign_suppressions AS
SELECT campaign, reason, uniqExact(request_id) AS requests
FROM email_requests FINAL
WHERE status IN ('suppressed', 'skipped')
GROUP BY campaign, reason
ORDER BY campaign, reason;
