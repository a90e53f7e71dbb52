-- Up Migration

-- The foreign key (sale_id, sale_starts_at) -> sales (id, starts_at) of checkout_attempts checked
-- every row on its own: per row a query of sales and a KEY SHARE lock of the sale's row (a
-- MultiXact as soon as two batches hold it), about a quarter of Postgres's CPU per attempt row at
-- stampede rates, where every row of a batch names the same sale. A check per statement takes its
-- place: whatever an INSERT or UPDATE writes, every (sale_id, sale_starts_at) with a sale_id must
-- be a sale's (id, starts_at), or the statement fails with the foreign key's error
-- (foreign_key_violation, 23503). What the key's ON DELETE CASCADE did, a trigger on sales does.
-- Unlike the key, the check does not lock the sale against a concurrent DELETE: sales rows are never
-- deleted by the service (old days leave by partition, src/db/partitions.ts).

CREATE FUNCTION flash_sale_attempts_name_sales () RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- One probe of sales per distinct pair: a batch's rows all name one sale (two across XX:00).
  IF EXISTS (SELECT 1 FROM (SELECT DISTINCT sale_id, sale_starts_at FROM written_attempts WHERE sale_id IS NOT NULL) a
             WHERE NOT EXISTS (SELECT 1 FROM sales s WHERE s.id = a.sale_id AND s.starts_at = a.sale_starts_at)) THEN
    RAISE foreign_key_violation USING
      MESSAGE = 'checkout_attempts: (sale_id, sale_starts_at) is not the (id, starts_at) of a sale',
      TABLE = 'checkout_attempts';
  END IF;
  RETURN NULL;
END
$$;

CREATE FUNCTION flash_sale_delete_sale_attempts () RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM checkout_attempts WHERE sale_starts_at = OLD.starts_at AND sale_id = OLD.id;
  RETURN NULL;
END
$$;

CREATE TRIGGER checkout_attempts_name_sales_on_insert AFTER INSERT ON checkout_attempts
  REFERENCING NEW TABLE AS written_attempts FOR EACH STATEMENT EXECUTE FUNCTION flash_sale_attempts_name_sales();
CREATE TRIGGER checkout_attempts_name_sales_on_update AFTER UPDATE ON checkout_attempts
  REFERENCING NEW TABLE AS written_attempts FOR EACH STATEMENT EXECUTE FUNCTION flash_sale_attempts_name_sales();
CREATE TRIGGER sales_delete_attempts AFTER DELETE ON sales
  FOR EACH ROW EXECUTE FUNCTION flash_sale_delete_sale_attempts();

ALTER TABLE checkout_attempts DROP CONSTRAINT checkout_attempts_sale_id_sale_starts_at_fkey;

-- Down Migration
ALTER TABLE checkout_attempts ADD FOREIGN KEY (sale_id, sale_starts_at) REFERENCES sales (id, starts_at) ON DELETE CASCADE;
DROP TRIGGER sales_delete_attempts ON sales;
DROP TRIGGER checkout_attempts_name_sales_on_update ON checkout_attempts;
DROP TRIGGER checkout_attempts_name_sales_on_insert ON checkout_attempts;
DROP FUNCTION flash_sale_delete_sale_attempts ();
DROP FUNCTION flash_sale_attempts_name_sales ();
