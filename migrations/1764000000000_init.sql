-- Up Migration

-- One row per hourly sale. UNIQUE(starts_at) makes opening a sale idempotent across instances.
CREATE TABLE sales (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  starts_at   timestamptz NOT NULL UNIQUE,
  ends_at     timestamptz NOT NULL,
  item_count  integer NOT NULL CHECK (item_count > 0),
  user_limit  integer NOT NULL CHECK (user_limit > 0),
  created_at  timestamptz NOT NULL DEFAULT now(),
  CHECK (ends_at > starts_at)
);

-- The catalog of one sale: items 1..item_count, generated deterministically when the sale opens.
CREATE TABLE items (
  sale_id     bigint NOT NULL REFERENCES sales (id) ON DELETE CASCADE,
  id          integer NOT NULL CHECK (id > 0),
  name        text NOT NULL,
  description text NOT NULL,
  price_cents integer NOT NULL CHECK (price_cents > 0),
  PRIMARY KEY (sale_id, id)
);

-- Every checkout attempt, accepted or refused. A code exists exactly when the attempt was accepted.
CREATE TABLE checkout_attempts (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sale_id      bigint REFERENCES sales (id) ON DELETE CASCADE,
  user_id      text,
  item_id      integer,
  outcome      text NOT NULL,
  code         text UNIQUE,
  expires_at   timestamptz,
  attempted_at timestamptz NOT NULL,
  CHECK ((outcome = 'accepted') = (code IS NOT NULL)),
  CHECK ((code IS NULL) = (expires_at IS NULL)),
  CHECK (code IS NULL OR (sale_id IS NOT NULL AND user_id IS NOT NULL AND item_id IS NOT NULL))
);
CREATE INDEX checkout_attempts_sale_outcome ON checkout_attempts (sale_id, outcome);

-- Purchases. The database itself refuses a second sale of one item or a second use of one code.
CREATE TABLE purchases (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  sale_id      bigint NOT NULL,
  item_id      integer NOT NULL,
  user_id      text NOT NULL,
  code         text NOT NULL UNIQUE REFERENCES checkout_attempts (code),
  price_cents  integer NOT NULL CHECK (price_cents > 0),
  purchased_at timestamptz NOT NULL,
  UNIQUE (sale_id, item_id),
  FOREIGN KEY (sale_id, item_id) REFERENCES items (sale_id, id) ON DELETE CASCADE
);
CREATE INDEX purchases_sale_user ON purchases (sale_id, user_id);

-- Down Migration
DROP TABLE purchases;
DROP TABLE checkout_attempts;
DROP TABLE items;
DROP TABLE sales;
