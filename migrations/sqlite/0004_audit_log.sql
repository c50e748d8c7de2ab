-- Who changed which store or thread, and when. Never holds a real address: shopper-wide
-- actions name only how many threads they touched.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target);
