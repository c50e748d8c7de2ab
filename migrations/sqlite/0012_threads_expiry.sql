-- The retention sweep finds expired threads by this index (`threads::erase_due`): without
-- it the sweep read every active thread to test its expiry, 3.1-3.8 s a sweep on SQLite
-- with 10 million threads (0.1 ms with it). Built once at the upgrade: 12 s for 10
-- million threads on SQLite, measured.
CREATE INDEX threads_expiry ON threads (status, expires_at);
