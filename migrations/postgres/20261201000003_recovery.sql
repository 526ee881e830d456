-- Account recovery and email addresses.
--
-- auth_users.email: optional, unique as lower() folds it, verified when email_verified_at is set.
-- auth_tokens: one-time credentials sent to a user (password reset, email verification), stored
-- as the token's public id and the SHA-256 of its secret, like sessions; single use (deleted when
-- used), short-lived, and only valid while the user's credentials are those it was issued under.
ALTER TABLE auth_users
    ADD COLUMN email TEXT NULL CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254),
    ADD COLUMN email_verified_at TIMESTAMPTZ NULL;
CREATE UNIQUE INDEX auth_users_email_key ON auth_users (lower(email));

CREATE TABLE auth_tokens (
    id               TEXT COLLATE "C" PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{22}$'),
    secret_hash      BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    user_id          BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    purpose          TEXT NOT NULL CHECK (purpose IN ('password_reset', 'email_verification')),
    -- For an email verification: the address it verifies.
    email            TEXT NULL,
    credential_epoch BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ NOT NULL
);
CREATE INDEX auth_tokens_user_id_idx ON auth_tokens (user_id);
CREATE INDEX auth_tokens_expires_at_idx ON auth_tokens (expires_at);

-- A change of the address or its verification reaches every node's cache.
DROP TRIGGER auth_users_notify_update ON auth_users;
CREATE TRIGGER auth_users_notify_update
AFTER UPDATE ON auth_users
FOR EACH ROW
WHEN (NEW.permissions IS DISTINCT FROM OLD.permissions
      OR NEW.disabled_at IS DISTINCT FROM OLD.disabled_at
      OR NEW.username IS DISTINCT FROM OLD.username
      OR NEW.credential_epoch IS DISTINCT FROM OLD.credential_epoch
      OR NEW.email IS DISTINCT FROM OLD.email
      OR NEW.email_verified_at IS DISTINCT FROM OLD.email_verified_at
      OR NEW.id IS DISTINCT FROM OLD.id)
EXECUTE FUNCTION auth_notify_user();

-- Reset requests are counted like logins, under kind 'reset' (a window per address and per
-- account).
ALTER TABLE auth_login_attempts DROP CONSTRAINT auth_login_attempts_kind_check;
ALTER TABLE auth_login_attempts ADD CONSTRAINT auth_login_attempts_kind_check
    CHECK (kind IN ('ip', 'user', 'reset'));
