-- The shop demo dataset in PostgreSQL (warehouse/shop.py, warehouse/shop_store.py): schema `shop`, six
-- tables with their keys and foreign keys. Idempotent; runs on PostgreSQL 15 and later. A bulk load
-- drops the keys first (shop_load_prepare) and puts them back after (shop_load_finish).
CREATE SCHEMA IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.products (
    product_id bigint NOT NULL,
    sku text NOT NULL,
    name text NOT NULL,
    category text NOT NULL,
    price numeric(12, 2) NOT NULL CHECK (price >= 0),
    active boolean NOT NULL,
    created_at timestamp NOT NULL,
    CONSTRAINT products_pkey PRIMARY KEY (product_id),
    CONSTRAINT products_sku_key UNIQUE (sku)
);

CREATE TABLE IF NOT EXISTS shop.customers (
    customer_id bigint NOT NULL,
    email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    city text NOT NULL,
    country text NOT NULL,
    created_at timestamp NOT NULL,
    CONSTRAINT customers_pkey PRIMARY KEY (customer_id),
    CONSTRAINT customers_email_key UNIQUE (email)
);

CREATE TABLE IF NOT EXISTS shop.orders (
    order_id bigint NOT NULL,
    customer_id bigint NOT NULL,
    order_date timestamp NOT NULL,
    status text NOT NULL CHECK (status IN ('PLACED', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED')),
    subtotal numeric(12, 2) NOT NULL,
    tax numeric(12, 2) NOT NULL,
    shipping_fee numeric(12, 2) NOT NULL,
    total numeric(12, 2) NOT NULL,
    CONSTRAINT orders_pkey PRIMARY KEY (order_id),
    CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES shop.customers (customer_id)
);

CREATE TABLE IF NOT EXISTS shop.order_items (
    order_item_id bigint NOT NULL,
    order_id bigint NOT NULL,
    product_id bigint NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(12, 2) NOT NULL,
    line_total numeric(12, 2) NOT NULL,
    CONSTRAINT order_items_pkey PRIMARY KEY (order_item_id),
    CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES shop.orders (order_id),
    CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id) REFERENCES shop.products (product_id)
);

CREATE TABLE IF NOT EXISTS shop.payments (
    payment_id bigint NOT NULL,
    order_id bigint NOT NULL,
    method text NOT NULL,
    amount numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    paid_at timestamp NOT NULL,
    txn_ref text NOT NULL,
    CONSTRAINT payments_pkey PRIMARY KEY (payment_id),
    CONSTRAINT payments_order_id_key UNIQUE (order_id),
    CONSTRAINT payments_order_id_fkey FOREIGN KEY (order_id) REFERENCES shop.orders (order_id)
);

CREATE TABLE IF NOT EXISTS shop.shipments (
    shipment_id bigint NOT NULL,
    order_id bigint NOT NULL,
    carrier text NOT NULL,
    tracking_no text NOT NULL,
    shipped_at timestamp NOT NULL,
    delivered_at timestamp,
    status text NOT NULL,
    CONSTRAINT shipments_pkey PRIMARY KEY (shipment_id),
    CONSTRAINT shipments_order_id_fkey FOREIGN KEY (order_id) REFERENCES shop.orders (order_id)
);

CREATE INDEX IF NOT EXISTS orders_customer_id_idx ON shop.orders (customer_id);
CREATE INDEX IF NOT EXISTS orders_order_date_idx ON shop.orders (order_date);
CREATE INDEX IF NOT EXISTS order_items_order_id_idx ON shop.order_items (order_id);
CREATE INDEX IF NOT EXISTS shipments_order_id_idx ON shop.shipments (order_id);
