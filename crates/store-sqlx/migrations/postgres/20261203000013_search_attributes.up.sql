-- Search documents carry the product attributes that searches filter, rank and count by
-- (status, category, price, stock, boost), so a search touches the products table only for
-- the page it returns. A trigger keeps them equal to the product's in the same transaction as
-- every product write (stock changes at checkout included).
alter table product_search_documents
    add column status product_status not null default 'active',
    add column category_id uuid,
    add column price_minor bigint not null default 0,
    add column stock bigint not null default 0,
    add column search_boost integer not null default 0;
update product_search_documents set status = products.status, category_id = products.category_id,
    price_minor = products.price_minor, stock = products.stock, search_boost = products.search_boost
from products where products.id = product_search_documents.product_id;

create function products_search_attributes() returns trigger language plpgsql as $$
begin
    update product_search_documents set status = new.status, category_id = new.category_id,
        price_minor = new.price_minor, stock = new.stock, search_boost = new.search_boost
    where product_id = new.id;
    return null;
end
$$;
create trigger products_search_attributes_au
after update of status, category_id, price_minor, stock, search_boost on products
for each row when (old.status is distinct from new.status or old.category_id is distinct from new.category_id
    or old.price_minor is distinct from new.price_minor or old.stock is distinct from new.stock
    or old.search_boost is distinct from new.search_boost)
execute function products_search_attributes();

-- A word's count may reach 0 inside a transaction (decremented first, deleted at 0 after), so
-- concurrent removals of one word never break the check.
alter table search_words drop constraint search_words_documents_check;
alter table search_words add constraint search_words_documents_check check (documents >= 0);
