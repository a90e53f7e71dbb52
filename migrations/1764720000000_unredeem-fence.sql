-- Up Migration

-- The redemptions of a checkout code whose purchase was given up on and put back: each purchase
-- statement carries its redemption's random token (src/records.ts purchaseWriter) and settles the
-- code only if that token is not listed here. A purchase whose outcome the service could not learn
-- (its connection lost mid-statement, a client timeout) is fenced off by appending its token, under
-- the same row lock the purchase takes: either the purchase committed first (the code is settled
-- 'purchased' and nothing is appended), or it can never commit. Only then does the code go back to
-- reserved in Redis, where a retry redeems it again under a new token, which the fence does not
-- stop. Unlike settled = 'voided' the code stays usable; it is voided only once its own expiry
-- has passed.
ALTER TABLE checkout_attempts ADD COLUMN unredeemed text[];

-- Down Migration
ALTER TABLE checkout_attempts DROP COLUMN unredeemed;
