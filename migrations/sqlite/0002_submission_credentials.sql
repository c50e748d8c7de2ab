-- SMTP AUTH credentials of stores for the submission listener. Only an argon2 hash of the
-- password is kept; the password is shown once when created.
CREATE TABLE submission_credentials (
    username       TEXT PRIMARY KEY,
    store_id       TEXT NOT NULL REFERENCES stores(id),
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);
