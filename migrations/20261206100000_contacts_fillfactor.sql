-- A sync updates contacts in place: a changed job title, phone or mobile leaves every indexed
-- column as it was. With room on the row's page, Postgres writes the new row version there as
-- a heap-only tuple and adds no entry to any of the table's four indexes; on full pages
-- (fillfactor 100, the default) every such update writes four index entries. Pages filled to
-- 90% leave that room. Rows written from now on get it; existing pages get it when rewritten.
ALTER TABLE contacts SET (fillfactor = 90);
