-- A lease is now also the message's due time: claiming or renewing it moves
-- next_attempt_at to the lease's end, so "due" is one range on the queue_due index
-- (next_attempt_at <= now AND held = 0) whatever the lease state. Messages leased when
-- this runs keep their lease.
UPDATE queue SET next_attempt_at = locked_until WHERE locked_until > next_attempt_at;
-- Every message is inserted, updated and deleted within minutes: vacuum and analyze the
-- queue after a few hundred changes, not after a fifth of the table (the default), so dead
-- index entries of delivered mail do not pile up at the head of queue_due and the planner
-- knows how many messages wait.
ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
                       autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 500);
-- Bodies are sealed (ChaCha20-Poly1305): random bytes that TOAST cannot compress. Stored
-- out of line without trying.
ALTER TABLE queue_bodies ALTER COLUMN message SET STORAGE EXTERNAL;
