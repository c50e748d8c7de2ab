-- maskrelay schema, PostgreSQL. Times are Unix seconds (BIGINT) so the same SQL serves both backends.
CREATE TABLE stores (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    contact     TEXT NOT NULL,
    senders     TEXT NOT NULL,          -- JSON array of approved sender patterns
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT                  -- a deleted store's id is never reused: its aliases stay reserved
);

CREATE TABLE threads (
    id             TEXT PRIMARY KEY,
    store_id       TEXT NOT NULL REFERENCES stores(id),
    order_ref      TEXT NOT NULL,
    shopper_key    TEXT,                -- lookup key of the shopper address; NULL once erased
    shopper_email  TEXT,                -- NULL once erased
    shopper_name   TEXT,
    shopper_alias  TEXT NOT NULL UNIQUE,
    store_alias    TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL,
    revoke_token   TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX threads_identity ON threads (store_id, order_ref, shopper_key);
CREATE INDEX threads_shopper ON threads (shopper_key);

CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    store_id   TEXT,
    thread_id  TEXT,
    alias      TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX events_kind_store ON events (kind, store_id);
CREATE INDEX events_alias ON events (alias);

CREATE TABLE queue (
    id               TEXT PRIMARY KEY,  -- random; also the VERP tag of the bounce address
    thread_id        TEXT NOT NULL,
    direction        TEXT NOT NULL,
    mail_from        TEXT NOT NULL,
    rcpt_to          TEXT NOT NULL,
    message          BYTEA NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT NOT NULL DEFAULT 0,
    locked_by        TEXT,
    last_error       TEXT
);
CREATE INDEX queue_due ON queue (next_attempt_at);
CREATE INDEX queue_thread ON queue (thread_id);

CREATE TABLE message_ids (
    relay_id    TEXT PRIMARY KEY,       -- the id the other side sees
    thread_id   TEXT NOT NULL,
    original    TEXT NOT NULL,          -- the id its author's client knows
    created_at  BIGINT NOT NULL
);
CREATE INDEX message_ids_thread ON message_ids (thread_id);
