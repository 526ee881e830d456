-- Credential epochs, and login throttling reserved before the password check (see the
-- Postgres migration of the same name).
ALTER TABLE auth_users ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE auth_sessions ADD COLUMN credential_epoch INTEGER NOT NULL DEFAULT 0;

DELETE FROM auth_login_attempts WHERE kind = 'user';
ALTER TABLE auth_login_attempts ADD COLUMN blocked_until INTEGER NOT NULL DEFAULT 0;
