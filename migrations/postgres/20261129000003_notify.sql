-- Change notifications for node-local principal caches (LISTEN axum_live_auth).
--
-- Payloads: 's:<session id>' (that session), 'u:<user id>' (every session of that user), '*'
-- (everything). Only changes that can make a cached principal wrong notify: a session deleted,
-- its deadline moved earlier or its secret, user or authentication time changed; a user deleted,
-- disabled or enabled, renamed, or their effective permissions changed (grants and roles reach
-- auth_users.permissions through the triggers of the first migration); any TRUNCATE. Touch
-- writes (deadlines moved later) and new sessions do not: every NOTIFY takes a global lock at
-- commit, so a notification per touch would cap write throughput.

CREATE FUNCTION auth_notify_session() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('axum_live_auth', 's:' || OLD.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION auth_notify_user() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('axum_live_auth', 'u:' || OLD.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION auth_notify_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('axum_live_auth', '*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_sessions_notify_delete
AFTER DELETE ON auth_sessions
FOR EACH ROW EXECUTE FUNCTION auth_notify_session();

CREATE TRIGGER auth_sessions_notify_update
AFTER UPDATE ON auth_sessions
FOR EACH ROW
WHEN (NEW.expires_at < OLD.expires_at
      OR NEW.idle_expires_at < OLD.idle_expires_at
      OR NEW.id IS DISTINCT FROM OLD.id
      OR NEW.secret_hash IS DISTINCT FROM OLD.secret_hash
      OR NEW.user_id IS DISTINCT FROM OLD.user_id
      OR NEW.authenticated_at IS DISTINCT FROM OLD.authenticated_at)
EXECUTE FUNCTION auth_notify_session();

CREATE TRIGGER auth_users_notify_delete
AFTER DELETE ON auth_users
FOR EACH ROW EXECUTE FUNCTION auth_notify_user();

CREATE TRIGGER auth_users_notify_update
AFTER UPDATE ON auth_users
FOR EACH ROW
WHEN (NEW.permissions IS DISTINCT FROM OLD.permissions
      OR NEW.disabled_at IS DISTINCT FROM OLD.disabled_at
      OR NEW.username IS DISTINCT FROM OLD.username
      OR NEW.id IS DISTINCT FROM OLD.id)
EXECUTE FUNCTION auth_notify_user();

CREATE TRIGGER auth_sessions_notify_truncate
AFTER TRUNCATE ON auth_sessions
FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_all();

CREATE TRIGGER auth_users_notify_truncate
AFTER TRUNCATE ON auth_users
FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_all();

-- TRUNCATE skips row triggers: recompute every user's effective permissions when a grant
-- table is truncated (this was a gap of the first migration), which notifies as above.
CREATE FUNCTION auth_grants_truncated() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM auth_refresh_permissions(ARRAY(SELECT id FROM auth_users));
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_user_permissions_truncate
AFTER TRUNCATE ON auth_user_permissions
FOR EACH STATEMENT EXECUTE FUNCTION auth_grants_truncated();

CREATE TRIGGER auth_user_roles_truncate
AFTER TRUNCATE ON auth_user_roles
FOR EACH STATEMENT EXECUTE FUNCTION auth_grants_truncated();

CREATE TRIGGER auth_role_permissions_truncate
AFTER TRUNCATE ON auth_role_permissions
FOR EACH STATEMENT EXECUTE FUNCTION auth_grants_truncated();
