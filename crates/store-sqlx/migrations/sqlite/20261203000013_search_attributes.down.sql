create table search_words_positive (
    word text primary key not null,
    documents integer not null check (documents > 0)
) strict, without rowid;
insert into search_words_positive (word, documents) select word, documents from search_words where documents > 0;
drop table search_words;
alter table search_words_positive rename to search_words;
drop trigger products_search_attributes_au;
drop trigger product_search_documents_au;
create trigger product_search_documents_au after update on product_search_documents begin
    insert into product_search (product_search, rowid, name, category, description)
    values ('delete', old.document_id, old.name, old.category, old.description);
    insert into product_search (rowid, name, category, description)
    values (new.document_id, new.name, new.category, new.description);
end;
alter table product_search_documents drop column search_boost;
alter table product_search_documents drop column stock;
alter table product_search_documents drop column price_minor;
alter table product_search_documents drop column category_id;
alter table product_search_documents drop column status;
