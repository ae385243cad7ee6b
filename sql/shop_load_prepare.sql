-- Before a bulk load of the shop (inside its transaction, after TRUNCATE): drop the keys and indexes,
-- cheaper to build once after the rows are in than to maintain row by row.
ALTER TABLE shop.order_items DROP CONSTRAINT IF EXISTS order_items_order_id_fkey;
ALTER TABLE shop.order_items DROP CONSTRAINT IF EXISTS order_items_product_id_fkey;
ALTER TABLE shop.payments DROP CONSTRAINT IF EXISTS payments_order_id_fkey;
ALTER TABLE shop.shipments DROP CONSTRAINT IF EXISTS shipments_order_id_fkey;
ALTER TABLE shop.orders DROP CONSTRAINT IF EXISTS orders_customer_id_fkey;
ALTER TABLE shop.products DROP CONSTRAINT IF EXISTS products_pkey;
ALTER TABLE shop.products DROP CONSTRAINT IF EXISTS products_sku_key;
ALTER TABLE shop.customers DROP CONSTRAINT IF EXISTS customers_pkey;
ALTER TABLE shop.customers DROP CONSTRAINT IF EXISTS customers_email_key;
ALTER TABLE shop.orders DROP CONSTRAINT IF EXISTS orders_pkey;
ALTER TABLE shop.order_items DROP CONSTRAINT IF EXISTS order_items_pkey;
ALTER TABLE shop.payments DROP CONSTRAINT IF EXISTS payments_pkey;
ALTER TABLE shop.payments DROP CONSTRAINT IF EXISTS payments_order_id_key;
ALTER TABLE shop.shipments DROP CONSTRAINT IF EXISTS shipments_pkey;
DROP INDEX IF EXISTS shop.orders_customer_id_idx;
DROP INDEX IF EXISTS shop.orders_order_date_idx;
DROP INDEX IF EXISTS shop.order_items_order_id_idx;
DROP INDEX IF EXISTS shop.shipments_order_id_idx;
