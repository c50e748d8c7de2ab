-- A lease is now also the message's due time: claiming or renewing it moves
-- next_attempt_at to the lease's end, so "due" is one range on the queue_due index
-- (next_attempt_at <= now AND held = 0) whatever the lease state. Messages leased when
-- this runs keep their lease.
UPDATE queue SET next_attempt_at = locked_until WHERE locked_until > next_attempt_at;
