-- After a bulk load of the shop (same transaction): put back the keys exactly as shop_schema has them;
-- shop_schema itself then recreates the indexes.
ALTER TABLE shop.products ADD CONSTRAINT products_pkey PRIMARY KEY (product_id);
ALTER TABLE shop.products ADD CONSTRAINT products_sku_key UNIQUE (sku);
ALTER TABLE shop.customers ADD CONSTRAINT customers_pkey PRIMARY KEY (customer_id);
ALTER TABLE shop.customers ADD CONSTRAINT customers_email_key UNIQUE (email);
ALTER TABLE shop.orders ADD CONSTRAINT orders_pkey PRIMARY KEY (order_id);
ALTER TABLE shop.order_items ADD CONSTRAINT order_items_pkey PRIMARY KEY (order_item_id);
ALTER TABLE shop.payments ADD CONSTRAINT payments_pkey PRIMARY KEY (payment_id);
ALTER TABLE shop.payments ADD CONSTRAINT payments_order_id_key UNIQUE (order_id);
ALTER TABLE shop.shipments ADD CONSTRAINT shipments_pkey PRIMARY KEY (shipment_id);
ALTER TABLE shop.orders ADD CONSTRAINT orders_customer_id_fkey
    FOREIGN KEY (customer_id) REFERENCES shop.customers (customer_id);
ALTER TABLE shop.order_items ADD CONSTRAINT order_items_order_id_fkey
    FOREIGN KEY (order_id) REFERENCES shop.orders (order_id);
ALTER TABLE shop.order_items ADD CONSTRAINT order_items_product_id_fkey
    FOREIGN KEY (product_id) REFERENCES shop.products (product_id);
ALTER TABLE shop.payments ADD CONSTRAINT payments_order_id_fkey
    FOREIGN KEY (order_id) REFERENCES shop.orders (order_id);
ALTER TABLE shop.shipments ADD CONSTRAINT shipments_order_id_fkey
    FOREIGN KEY (order_id) REFERENCES shop.orders (order_id);
