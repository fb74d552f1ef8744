-- Per-address claims for contact creation. A page that creates contacts inserts a row for
-- each new address (sorted) and deletes them before it commits; a page of another managed
-- tenant of the same PSA tenant creating one of those addresses meanwhile waits on the unique
-- index until the first commits, then sees its contact (crates/store/src/reconcile.rs,
-- `claim_new_addresses`). This replaces transaction-scoped advisory locks hashed into 256
-- buckets per PSA tenant, with which pages of a thousand new addresses took nearly every
-- bucket and ran one at a time. No row outlives its transaction, so the table needs no
-- crash safety: unlogged, it writes no WAL.
CREATE UNLOGGED TABLE address_claims (
    tenant_id  uuid NOT NULL,
    address    text NOT NULL,
    PRIMARY KEY (tenant_id, address)
);
