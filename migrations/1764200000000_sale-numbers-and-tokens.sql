-- Up Migration

-- Sale ids count sales: 1, 2, 3. An identity column burns a value on every
-- `INSERT ... ON CONFLICT DO NOTHING` (every instance preparing the same hour did), and more after a
-- crash; preparation now assigns max(id) + 1 under a transaction-level advisory lock instead
-- (SaleRepository.prepareSale), so no value is ever skipped.
ALTER TABLE sales ALTER COLUMN id DROP IDENTITY;

-- A random token per sale row, part of its Redis hash tag ({sale:<id>:<token>}): Redis state left
-- by another database under the same key prefix (a restored or recreated database reusing sale
-- id 1) is never taken for this sale's. Existing rows get one each (the default is volatile).
ALTER TABLE sales ADD COLUMN token text NOT NULL DEFAULT substr(md5(gen_random_uuid()::text), 1, 10);

-- Down Migration
ALTER TABLE sales DROP COLUMN token;
ALTER TABLE sales ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('sales', 'id'), coalesce(max(id), 1)) FROM sales;
