-- Campaigns and guards (frequency cap, quiet hours, suppression): every decision about an
-- email step is a row of email_requests, and a step can be decided more than once.
--
-- request_id stays deterministic, one per campaign step of a journey. A step held back by
-- a guard first writes a 'deferred' row; when it is due again it writes another row with
-- the SAME request_id ('sent', or 'deferred' again, or 'suppressed' / 'skipped').
-- email_requests is a ReplacingMergeTree without a version column: the LAST INSERTED row
-- of a request_id wins, so the table (read with FINAL) holds the final state of each step.
--
-- status (this extends the comment in 002_email_requests.sql, which is left as applied):
--   'sent'        reason ''
--   'deferred'    reason 'frequency_cap' | 'quiet_hours' | 'collision'
--                 (not sent yet; deferred_until says when the step is due again)
--   'suppressed'  reason 'no_email' | 'unsubscribed' | 'campaign_unsubscribed' |
--                        'hard_bounce' | 'spam_complaint' | 'suppression_list' |
--                        'render_failed' | 'request_too_large'
--   'skipped'     reason 'stale' | 'nothing_to_show' | 'collision'
-- The comments below also land in system.columns (DESCRIBE email_requests).
--
-- Rows written before this migration read as category '', deferrals 0, deferred_until NULL.

ALTER TABLE email_requests
    COMMENT COLUMN status 'sent | deferred | suppressed | skipped (see 006_campaign_guards.sql)';

ALTER TABLE email_requests
    COMMENT COLUMN reason '<empty> when sent, else why the step was deferred, suppressed or skipped';

-- 'marketing' | 'transactional': the step's category (guards apply to marketing only)
ALTER TABLE email_requests ADD COLUMN IF NOT EXISTS
    category LowCardinality(String) DEFAULT ''
    COMMENT 'marketing | transactional';

-- how many times this step was deferred before this row (a sent row after one deferral: 1)
ALTER TABLE email_requests ADD COLUMN IF NOT EXISTS
    deferrals UInt16 DEFAULT 0
    COMMENT 'times this step was deferred before this row';

-- status 'deferred': when the step is due again; NULL for every other status
ALTER TABLE email_requests ADD COLUMN IF NOT EXISTS
    deferred_until Nullable(DateTime64(3, 'UTC'))
    COMMENT 'status deferred: when the step is due again, else NULL';
