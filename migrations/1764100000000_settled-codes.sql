-- Up Migration

-- How an accepted checkout code ended: 'purchased' (it has its purchases row) or 'voided' (its
-- purchase was abandoned and its item given back). Set at most once, by an UPDATE ... WHERE
-- settled IS NULL: the row lock makes a purchase and a void of the same code race for it, and
-- exactly one wins. This is what lets any instance give back a purchase that a crashed instance
-- left half done without ever undoing one that is about to commit.
ALTER TABLE checkout_attempts
  ADD COLUMN settled text CHECK (settled IN ('purchased', 'voided')),
  ADD CHECK (settled IS NULL OR code IS NOT NULL);

-- Down Migration
ALTER TABLE checkout_attempts DROP COLUMN settled;
