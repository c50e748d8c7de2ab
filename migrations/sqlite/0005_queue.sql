-- The queue, for per-message leases and one body write per message.
-- Bodies move to their own table: written once at enqueue, read at each attempt, deleted
-- at completion; taking, renewing and releasing a lease no longer rewrites them.
CREATE TABLE queue_bodies (
    id       TEXT PRIMARY KEY,        -- the queue row's id (also the seal's context)
    message  BLOB NOT NULL
);
INSERT INTO queue_bodies (id, message) SELECT id, message FROM queue;

-- The holder's random token, new at each claim: complete, retry and give-up write only
-- while it is still theirs. locked_by keeps the holding node's id (queue.node_id), so a
-- restarted node takes back what it held at once.
ALTER TABLE queue ADD COLUMN lease_token TEXT;
-- 1: held by the operator (queue hold), never claimed until released.
ALTER TABLE queue ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
-- Bytes of the body, for the listing without reading it.
ALTER TABLE queue ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE queue SET size = LENGTH(message);
ALTER TABLE queue DROP COLUMN message;
CREATE INDEX queue_locked_by ON queue (locked_by);
