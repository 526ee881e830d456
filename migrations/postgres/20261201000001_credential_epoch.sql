-- Credential epochs, and login throttling reserved before the password check.
--
-- auth_users.credential_epoch is bumped by every password change or reset. Each session records
-- the epoch it was created under, and the per-request lookup accepts a session only while the
-- two agree: a login whose password check ran before a change can never yield a valid session,
-- however its insert interleaves with the change.
ALTER TABLE auth_users ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE auth_sessions ADD COLUMN credential_epoch BIGINT NOT NULL DEFAULT 0;

-- A change of epoch must reach every node's cache, like a change of permissions.
DROP TRIGGER auth_users_notify_update ON auth_users;
CREATE TRIGGER auth_users_notify_update
AFTER UPDATE ON auth_users
FOR EACH ROW
WHEN (NEW.permissions IS DISTINCT FROM OLD.permissions
      OR NEW.disabled_at IS DISTINCT FROM OLD.disabled_at
      OR NEW.username IS DISTINCT FROM OLD.username
      OR NEW.credential_epoch IS DISTINCT FROM OLD.credential_epoch
      OR NEW.id IS DISTINCT FROM OLD.id)
EXECUTE FUNCTION auth_notify_user();

DROP TRIGGER auth_sessions_notify_update ON auth_sessions;
CREATE TRIGGER auth_sessions_notify_update
AFTER UPDATE ON auth_sessions
FOR EACH ROW
WHEN (NEW.expires_at < OLD.expires_at
      OR NEW.idle_expires_at < OLD.idle_expires_at
      OR NEW.id IS DISTINCT FROM OLD.id
      OR NEW.secret_hash IS DISTINCT FROM OLD.secret_hash
      OR NEW.user_id IS DISTINCT FROM OLD.user_id
      OR NEW.authenticated_at IS DISTINCT FROM OLD.authenticated_at
      OR NEW.credential_epoch IS DISTINCT FROM OLD.credential_epoch)
EXECUTE FUNCTION auth_notify_session();

-- Login attempts: kind 'user' rows are now keyed 'id:<user id>' for accounts and
-- 'name:<lower(name)>' for names without one, and block further attempts until blocked_until.
-- Counters under the old keys are dropped (they only ever throttle).
DELETE FROM auth_login_attempts WHERE kind = 'user';
ALTER TABLE auth_login_attempts ADD COLUMN blocked_until TIMESTAMPTZ NOT NULL DEFAULT now();
