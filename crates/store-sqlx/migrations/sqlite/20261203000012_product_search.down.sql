drop table search_index_state;
drop table search_words;
drop trigger product_search_documents_au;
drop trigger product_search_documents_ad;
drop trigger product_search_documents_ai;
drop table product_search;
drop table product_search_documents;
alter table categories drop column search_name;
alter table products drop column search_boost;
