-- The shopper's side and the leak response: a thread's language, incidents (outsider
-- attempts on a store's shopper aliases, grouped), webhooks and their durable outbox, and
-- the lease rows that keep a background task on one node at a time.

-- BCP 47 tag of the shopper's language (`en`, `ja`); NULL: the relay's `relay.locale`.
ALTER TABLE threads ADD COLUMN locale TEXT;

-- One incident: outsider attempts on one store's shopper aliases from related sending
-- domains within a time window. Holds no shopper data: thread ids and outsider domains.
CREATE TABLE incidents (
    id        TEXT PRIMARY KEY,
    store_id  TEXT NOT NULL,
    first_at  BIGINT NOT NULL,
    last_at   BIGINT NOT NULL,
    attempts  BIGINT NOT NULL
);
CREATE INDEX incidents_store ON incidents (store_id, first_at);
CREATE INDEX incidents_last ON incidents (last_at);

-- Which shopper aliases (by thread) an incident hit, and whether that shopper was told.
CREATE TABLE incident_aliases (
    incident_id  TEXT NOT NULL,
    thread_id    TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    first_at     BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    notified_at  BIGINT,
    PRIMARY KEY (incident_id, thread_id)
);

-- The sending domains of an incident ('' for the null sender).
CREATE TABLE incident_domains (
    incident_id  TEXT NOT NULL,
    domain       TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    first_at     BIGINT NOT NULL,
    last_at      BIGINT NOT NULL,
    PRIMARY KEY (incident_id, domain)
);

-- Where events are POSTed. The signing secret is sealed like shopper data.
CREATE TABLE webhooks (
    id          TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,          -- JSON array of event types
    secret      TEXT NOT NULL,          -- sealed
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    last_success_at  BIGINT,
    last_failure_at  BIGINT,
    last_error       TEXT
);

-- One event for one webhook, written in the transaction that records the event, leased
-- by one sender at a time, deleted once delivered or given up.
CREATE TABLE webhook_outbox (
    id               TEXT PRIMARY KEY,
    webhook_id       TEXT NOT NULL,
    body             TEXT NOT NULL,      -- the JSON POSTed; never shopper data
    created_at       BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT NOT NULL DEFAULT 0,
    locked_by        TEXT,
    last_error       TEXT
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at);
CREATE INDEX webhook_outbox_webhook ON webhook_outbox (webhook_id);

-- A background task that must run on one node at a time holds its row until `until`.
CREATE TABLE task_leases (
    name    TEXT PRIMARY KEY,
    holder  TEXT NOT NULL,
    until   BIGINT NOT NULL
);

CREATE INDEX events_at ON events (at);
CREATE INDEX threads_status ON threads (status, updated_at);
