-- The planner is told what the page reads depend on, whatever ANALYZE happened to sample: a
-- contact's normalized address and a link's object id are nearly unique (nine rows in ten have
-- a value of their own), and the PSA tenant selects nearly every row (most deployments
-- hold one). A page reads links by object id and contacts by address with one index probe per
-- key. When a table had been analyzed while it held a single row (the first contact or link
-- of a first sync), its statistics called every column unique, `tenant_id` included, so an
-- index that leads with tenant_id alone (the primary key, or links_one_per_contact) looked as
-- good as the one that holds the key: each probe went through it and filtered every row of
-- the PSA tenant by the key. A page then cost 100 ms and more instead of 1 ms, and a
-- 200-tenant first sync took 16–25 s instead of 4 s (seen in `make bench` now and then, until
-- autovacuum analyzed the table again). With these distinct counts fixed, the index that holds
-- the key is the cheaper path at every table size. They take effect at the next ANALYZE,
-- which this migration runs.
ALTER TABLE contacts ALTER COLUMN email_normalized SET (n_distinct = -0.9);
ALTER TABLE contacts ALTER COLUMN tenant_id SET (n_distinct = 1);
ALTER TABLE links ALTER COLUMN object_id SET (n_distinct = -0.9);
ALTER TABLE links ALTER COLUMN tenant_id SET (n_distinct = 1);
ANALYZE contacts, links;
