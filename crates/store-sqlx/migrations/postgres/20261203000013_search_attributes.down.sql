delete from search_words where documents = 0;
alter table search_words drop constraint search_words_documents_check;
alter table search_words add constraint search_words_documents_check check (documents > 0);
drop trigger products_search_attributes_au on products;
drop function products_search_attributes();
alter table product_search_documents
    drop column search_boost,
    drop column stock,
    drop column price_minor,
    drop column category_id,
    drop column status;
