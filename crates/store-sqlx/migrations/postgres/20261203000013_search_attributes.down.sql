drop trigger products_search_attributes_au on products;
drop function products_search_attributes();
alter table product_search_documents
    drop column search_boost,
    drop column stock,
    drop column price_minor,
    drop column category_id,
    drop column status;
