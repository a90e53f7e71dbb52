-- Up Migration

-- The service names each checkout attempt before it writes it (a UUIDv7, time-ordered so the
-- index grows at its right edge). An attempt whose batch may or may not have committed (a
-- timeout, a connection lost mid-commit) or that Postgres could not take at all is written again
-- later under the same id from the instance's spool (src/attempt-spool.ts): the unique index
-- makes that replay idempotent, and lets it overwrite a late commit of the original. Rows written
-- before this migration have none.
ALTER TABLE checkout_attempts ADD COLUMN attempt_id uuid;
CREATE UNIQUE INDEX checkout_attempts_attempt_id ON checkout_attempts (attempt_id);

-- Down Migration
ALTER TABLE checkout_attempts DROP COLUMN attempt_id;
