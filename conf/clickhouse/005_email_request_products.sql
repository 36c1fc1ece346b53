-- The products in the cart a reminder was about, for "top abandoned products" questions.
-- Rows written before this migration read as an empty array.
ALTER TABLE email_requests ADD COLUMN IF NOT EXISTS product_ids Array(String) DEFAULT [];
