-- Account recovery and email addresses (see the Postgres migration of the same name).
ALTER TABLE auth_users ADD COLUMN email TEXT NULL
    CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254);
ALTER TABLE auth_users ADD COLUMN email_verified_at INTEGER NULL;
CREATE UNIQUE INDEX auth_users_email_key ON auth_users (lower(email));

CREATE TABLE auth_tokens (
    id               TEXT PRIMARY KEY CHECK (length(id) = 22 AND id NOT GLOB '*[^A-Za-z0-9_-]*'),
    secret_hash      BLOB NOT NULL CHECK (length(secret_hash) = 32),
    user_id          INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    purpose          TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    email            TEXT NULL,
    credential_epoch INTEGER NOT NULL,
    created_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    expires_at       INTEGER NOT NULL
) STRICT;
CREATE INDEX auth_tokens_user_id_idx ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expires_at_idx ON auth_tokens (expires_at);

-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with kind 'reset'.
CREATE TABLE auth_login_attempts_new (
    kind            TEXT NOT NULL CHECK (kind IN ('ip', 'user', 'reset')),
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    failures        INTEGER NOT NULL,
    window_start    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    last_failure_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    blocked_until   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, key)
) STRICT;
INSERT INTO auth_login_attempts_new SELECT kind, key, failures, window_start, last_failure_at,
    blocked_until FROM auth_login_attempts;
DROP TABLE auth_login_attempts;
ALTER TABLE auth_login_attempts_new RENAME TO auth_login_attempts;
CREATE INDEX auth_login_attempts_last_failure_idx ON auth_login_attempts (last_failure_at);
