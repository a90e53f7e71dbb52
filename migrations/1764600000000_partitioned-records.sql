-- Up Migration

-- checkout_attempts and purchases become tables partitioned by day (range on sale_starts_at), so
-- inserts, vacuum and indexes scale with one day of rows instead of with all of history, and old
-- days leave by dropping a partition (src/partitions.ts) instead of by DELETE.
--
-- The partition key is sale_starts_at: the start of the sale a row belongs to. A UNIQUE
-- constraint on a partitioned table must include its key, and because sales.starts_at is unique
-- the pair (sale_id, sale_starts_at) names a sale exactly as sale_id alone did: UNIQUE (code,
-- sale_starts_at) and UNIQUE (sale_id, item_id, sale_starts_at) refuse what UNIQUE (code) and
-- UNIQUE (sale_id, item_id) refused, and the foreign key (sale_id, sale_starts_at) -> sales (id,
-- starts_at) keeps the two columns in step. An attempt made outside any sale (no_active_sale, an
-- invalid request between sales) has no sale_id; its sale_starts_at is its own attempted_at, so it
-- lands in the partition of the day it was made.
--
-- Lookups by code carry the sale's start along (the service always knows the sale of a code it
-- settles), so the settlement fence's UPDATE ... WHERE settled IS NULL touches one partition.

-- What the composite foreign keys reference.
ALTER TABLE sales ADD CONSTRAINT sales_id_starts_at_key UNIQUE (id, starts_at);

-- The old tables step aside (their index names would clash), are copied, then dropped.
ALTER TABLE purchases RENAME TO purchases_unpartitioned;
ALTER TABLE checkout_attempts RENAME TO checkout_attempts_unpartitioned;
DO $$
DECLARE index_name name;
BEGIN
  FOR index_name IN
    SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE i.indrelid IN ('purchases_unpartitioned'::regclass, 'checkout_attempts_unpartitioned'::regclass)
  LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', index_name, 'old_' || index_name);
  END LOOP;
END
$$;

-- Partitioned tables cannot have identity columns before Postgres 17: plain sequences, which
-- continue where the old identities were.
CREATE SEQUENCE checkout_attempt_ids;
CREATE SEQUENCE purchase_ids;
SELECT setval('checkout_attempt_ids', coalesce((SELECT max(id) FROM checkout_attempts_unpartitioned), 0) + 1, false);
SELECT setval('purchase_ids', coalesce((SELECT max(id) FROM purchases_unpartitioned), 0) + 1, false);

CREATE TABLE checkout_attempts (
  id             bigint NOT NULL DEFAULT nextval('checkout_attempt_ids'),
  attempt_id     uuid,
  sale_id        bigint,
  sale_starts_at timestamptz NOT NULL,
  user_id        text,
  item_id        integer,
  outcome        text NOT NULL,
  code           text,
  expires_at     timestamptz,
  attempted_at   timestamptz NOT NULL,
  settled        text CHECK (settled IN ('purchased', 'voided')),
  PRIMARY KEY (id, sale_starts_at),
  UNIQUE (code, sale_starts_at),
  FOREIGN KEY (sale_id, sale_starts_at) REFERENCES sales (id, starts_at) ON DELETE CASCADE,
  CHECK (sale_id IS NOT NULL OR sale_starts_at = attempted_at),
  CHECK ((outcome = 'accepted') = (code IS NOT NULL)),
  CHECK ((code IS NULL) = (expires_at IS NULL)),
  CHECK (code IS NULL OR (sale_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL)),
  CHECK (settled IS NULL OR code IS NOT NULL)
) PARTITION BY RANGE (sale_starts_at);
ALTER SEQUENCE checkout_attempt_ids OWNED BY checkout_attempts.id;
CREATE INDEX checkout_attempts_sale_outcome ON checkout_attempts (sale_id, outcome);
-- The spool's replay key (migrations/1764310000000_checkout-attempt-ids.sql), with the partition
-- key: a replayed attempt derives the same sale_starts_at as its original, so it still meets it.
CREATE UNIQUE INDEX checkout_attempts_attempt_id ON checkout_attempts (attempt_id, sale_starts_at);

-- The database itself still refuses a second sale of one item, a second use of one code, and a
-- purchase of a code that was never issued in that sale.
CREATE TABLE purchases (
  id             bigint NOT NULL DEFAULT nextval('purchase_ids'),
  sale_id        bigint NOT NULL,
  sale_starts_at timestamptz NOT NULL,
  item_id        integer NOT NULL,
  user_id        text NOT NULL,
  code           text NOT NULL,
  price_cents    integer NOT NULL CHECK (price_cents > 0),
  purchased_at   timestamptz NOT NULL,
  PRIMARY KEY (id, sale_starts_at),
  UNIQUE (code, sale_starts_at),
  UNIQUE (sale_id, item_id, sale_starts_at),
  FOREIGN KEY (sale_id, sale_starts_at) REFERENCES sales (id, starts_at) ON DELETE CASCADE,
  FOREIGN KEY (sale_id, item_id) REFERENCES items (sale_id, id) ON DELETE CASCADE,
  FOREIGN KEY (code, sale_starts_at) REFERENCES checkout_attempts (code, sale_starts_at)
) PARTITION BY RANGE (sale_starts_at);
ALTER SEQUENCE purchase_ids OWNED BY purchases.id;
CREATE INDEX purchases_sale_user ON purchases (sale_id, user_id);

-- Adds the partitions of checkout_attempts and purchases for the UTC days first_day..last_day
-- that do not exist yet; returns how many tables it created. Each is created standalone with its
-- bound as a CHECK and then attached: ATTACH PARTITION takes SHARE UPDATE EXCLUSIVE on the parent
-- (inserts and the fence carry on), where CREATE TABLE ... PARTITION OF takes ACCESS EXCLUSIVE,
-- and the CHECK spares ATTACH a scan. Instances starting together serialize on a transaction-level
-- advisory lock (which also works through a transaction-mode PgBouncer).
CREATE FUNCTION flash_sale_add_day_partitions (first_day date, last_day date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  day date;
  parent text;
  partition_name text;
  low timestamptz;
  high timestamptz;
  created integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.flash_sale_add_day_partitions'));
  FOR day IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
    low := day::timestamp AT TIME ZONE 'UTC';
    high := (day + 1)::timestamp AT TIME ZONE 'UTC';
    -- checkout_attempts first: purchases' partition references it.
    FOREACH parent IN ARRAY ARRAY['checkout_attempts', 'purchases'] LOOP
      partition_name := parent || '_p' || to_char(day, 'YYYYMMDD');
      CONTINUE WHEN to_regclass(format('%I.%I', current_schema(), partition_name)) IS NOT NULL;
      EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS, CONSTRAINT %I CHECK (sale_starts_at >= %L AND sale_starts_at < %L))',
                     partition_name, parent, partition_name || '_bound', low, high);
      EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent, partition_name, low, high);
      EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', partition_name, partition_name || '_bound');
      created := created + 1;
    END LOOP;
  END LOOP;
  RETURN created;
END
$$;

-- Partitions for the days that have rows (the service adds today's and the days ahead at start-up).
SELECT flash_sale_add_day_partitions(day, day)
FROM (SELECT (starts_at AT TIME ZONE 'UTC')::date AS day FROM sales
      UNION SELECT (attempted_at AT TIME ZONE 'UTC')::date FROM checkout_attempts_unpartitioned WHERE sale_id IS NULL) AS days;

INSERT INTO checkout_attempts (id, attempt_id, sale_id, sale_starts_at, user_id, item_id, outcome, code, expires_at, attempted_at, settled)
SELECT a.id, a.attempt_id, a.sale_id, coalesce(s.starts_at, a.attempted_at), a.user_id, a.item_id, a.outcome, a.code, a.expires_at, a.attempted_at, a.settled
FROM checkout_attempts_unpartitioned a LEFT JOIN sales s ON s.id = a.sale_id;

INSERT INTO purchases (id, sale_id, sale_starts_at, item_id, user_id, code, price_cents, purchased_at)
SELECT p.id, p.sale_id, s.starts_at, p.item_id, p.user_id, p.code, p.price_cents, p.purchased_at
FROM purchases_unpartitioned p JOIN sales s ON s.id = p.sale_id;

DROP TABLE purchases_unpartitioned;
DROP TABLE checkout_attempts_unpartitioned;

-- Down Migration
DROP FUNCTION flash_sale_add_day_partitions (date, date);
ALTER TABLE purchases RENAME TO purchases_partitioned;
ALTER TABLE checkout_attempts RENAME TO checkout_attempts_partitioned;
CREATE TABLE checkout_attempts (
  id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  attempt_id   uuid,
  sale_id      bigint REFERENCES sales (id) ON DELETE CASCADE,
  user_id      text,
  item_id      integer,
  outcome      text NOT NULL,
  code         text,
  expires_at   timestamptz,
  attempted_at timestamptz NOT NULL,
  settled      text CHECK (settled IN ('purchased', 'voided')),
  CHECK ((outcome = 'accepted') = (code IS NOT NULL)),
  CHECK ((code IS NULL) = (expires_at IS NULL)),
  CHECK (code IS NULL OR (sale_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL)),
  CHECK (settled IS NULL OR code IS NOT NULL)
);
INSERT INTO checkout_attempts (id, attempt_id, sale_id, user_id, item_id, outcome, code, expires_at, attempted_at, settled)
SELECT id, attempt_id, sale_id, user_id, item_id, outcome, code, expires_at, attempted_at, settled FROM checkout_attempts_partitioned;
CREATE TABLE purchases (
  id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  sale_id      bigint NOT NULL,
  item_id      integer NOT NULL,
  user_id      text NOT NULL,
  code         text NOT NULL,
  price_cents  integer NOT NULL CHECK (price_cents > 0),
  purchased_at timestamptz NOT NULL,
  FOREIGN KEY (sale_id, item_id) REFERENCES items (sale_id, id) ON DELETE CASCADE
);
INSERT INTO purchases (id, sale_id, item_id, user_id, code, price_cents, purchased_at)
SELECT id, sale_id, item_id, user_id, code, price_cents, purchased_at FROM purchases_partitioned;
DROP TABLE purchases_partitioned;
DROP TABLE checkout_attempts_partitioned;
ALTER TABLE checkout_attempts ADD UNIQUE (code);
CREATE INDEX checkout_attempts_sale_outcome ON checkout_attempts (sale_id, outcome);
CREATE UNIQUE INDEX checkout_attempts_attempt_id ON checkout_attempts (attempt_id);
ALTER TABLE purchases ADD UNIQUE (code), ADD UNIQUE (sale_id, item_id), ADD FOREIGN KEY (code) REFERENCES checkout_attempts (code);
CREATE INDEX purchases_sale_user ON purchases (sale_id, user_id);
SELECT setval(pg_get_serial_sequence('checkout_attempts', 'id'), coalesce((SELECT max(id) FROM checkout_attempts), 0) + 1, false);
SELECT setval(pg_get_serial_sequence('purchases', 'id'), coalesce((SELECT max(id) FROM purchases), 0) + 1, false);
ALTER TABLE sales DROP CONSTRAINT sales_id_starts_at_key;
