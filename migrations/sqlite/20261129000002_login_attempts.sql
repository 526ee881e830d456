-- Failed logins, counted per client IP and per username (see the Postgres migration).
CREATE TABLE auth_login_attempts (
    kind            TEXT NOT NULL CHECK (kind IN ('ip', 'user')),
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    failures        INTEGER NOT NULL,
    window_start    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    last_failure_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    PRIMARY KEY (kind, key)
) STRICT;
CREATE INDEX auth_login_attempts_last_failure_idx ON auth_login_attempts (last_failure_at);
