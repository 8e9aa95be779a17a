-- Search documents carry the product attributes that searches filter, rank and count by
-- (status, category, price, stock, boost), so a search touches the products table only for
-- the page it returns. A trigger keeps them equal to the product's in the same transaction as
-- every product write (stock changes at checkout included); the full-text index is rewritten
-- only when the analysed text changes, not when stock does.
alter table product_search_documents add column status text not null default 'active';
alter table product_search_documents add column category_id blob;
alter table product_search_documents add column price_minor integer not null default 0;
alter table product_search_documents add column stock integer not null default 0;
alter table product_search_documents add column search_boost integer not null default 0;
update product_search_documents set
    status = (select products.status from products where products.id = product_search_documents.product_id),
    category_id = (select products.category_id from products where products.id = product_search_documents.product_id),
    price_minor = (select products.price_minor from products where products.id = product_search_documents.product_id),
    stock = (select products.stock from products where products.id = product_search_documents.product_id),
    search_boost = (select products.search_boost from products where products.id = product_search_documents.product_id);

drop trigger product_search_documents_au;
create trigger product_search_documents_au after update of name, category, description on product_search_documents
when old.name is not new.name or old.category is not new.category or old.description is not new.description
begin
    insert into product_search (product_search, rowid, name, category, description)
    values ('delete', old.document_id, old.name, old.category, old.description);
    insert into product_search (rowid, name, category, description)
    values (new.document_id, new.name, new.category, new.description);
end;

create trigger products_search_attributes_au
after update of status, category_id, price_minor, stock, search_boost on products
when old.status is not new.status or old.category_id is not new.category_id or old.price_minor is not new.price_minor
    or old.stock is not new.stock or old.search_boost is not new.search_boost
begin
    update product_search_documents set status = new.status, category_id = new.category_id,
        price_minor = new.price_minor, stock = new.stock, search_boost = new.search_boost
    where product_id = new.id;
end;

-- A word's count may reach 0 inside a transaction (decremented first, deleted at 0 after), so
-- concurrent removals of one word never break the check.
create table search_words_counted (
    word text primary key not null,
    documents integer not null check (documents >= 0)
) strict, without rowid;
insert into search_words_counted (word, documents) select word, documents from search_words;
drop table search_words;
alter table search_words_counted rename to search_words;
