-- One value sealed under the privacy key of the first relay that used this database. Each
-- relay opens it at start, so relays that share a database but not their keys are stopped
-- even before any shopper data exists. `maskrelay keys rotate` re-seals it.
CREATE TABLE keyring_check (
    id          TEXT PRIMARY KEY,
    sealed      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
