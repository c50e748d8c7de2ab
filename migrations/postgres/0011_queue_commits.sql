-- The queue writer's last committed batch, one row per running relay process (a random
-- writer id, new at each start). Every batch writes its own random token here in the same
-- transaction, so when a COMMIT fails without saying whether it took effect (the
-- connection to PostgreSQL dropped while it ran) the writer reads this row back and
-- knows: the token is there, the batch is stored and its callers get their answers; it is
-- not, nothing of it is stored and it may be written again. Without it the writer retried
-- such a batch and queued its mail twice.
CREATE TABLE queue_commits (
    writer TEXT PRIMARY KEY,
    batch TEXT NOT NULL,
    at BIGINT NOT NULL
);
