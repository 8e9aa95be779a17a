-- Carts, orders and idempotency keys are lost; users and products stay as they were.
drop table if exists idempotency_records;
drop table if exists order_lines;
drop table if exists orders;
drop table if exists cart_items;
