-- Failed logins, counted per client IP and per username, shared by every node.
--
-- kind 'ip':   failures within the window that started at window_start.
-- kind 'user': consecutive failures of one username (lowercased), known or not; the last at
--              last_failure_at. A successful login or a password reset clears the row.
CREATE TABLE auth_login_attempts (
    kind            TEXT NOT NULL CHECK (kind IN ('ip', 'user')),
    key             TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    failures        INTEGER NOT NULL,
    window_start    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failure_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX auth_login_attempts_last_failure_idx ON auth_login_attempts (last_failure_at);
