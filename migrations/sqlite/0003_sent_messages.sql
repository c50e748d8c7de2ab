-- What the relay sent, without addresses or bodies, so a bounce that comes back to a
-- VERP address after delivery can be tied to its thread. Pruned after 30 days.
CREATE TABLE sent_messages (
    queue_id   TEXT PRIMARY KEY,
    thread_id  TEXT NOT NULL,
    direction  TEXT NOT NULL,
    sent_at    BIGINT NOT NULL
);
CREATE INDEX sent_messages_at ON sent_messages (sent_at);
