-- axum-live-auth, SQLite store: the same tables and columns as the Postgres store.
--
-- Differences, all forced by SQLite: times are INTEGER milliseconds since the Unix epoch
-- (compare with the `auth_now_ms` expression below), `ip` is TEXT, `auth_users.permissions` is
-- TEXT with one permission per line, and lower() folds ASCII letters only, so usernames are
-- unique case-insensitively for ASCII letters.

CREATE TABLE auth_users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    password_hash TEXT NULL,
    -- Non-null means banned: no request of this user authenticates.
    disabled_at   INTEGER NULL,
    created_at    INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    -- Effective permissions (direct grants plus role grants), sorted, one per line. Maintained
    -- by the triggers below in the same transaction as the grant. Do not write it by hand.
    permissions   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE UNIQUE INDEX auth_users_username_key ON auth_users (lower(username));

CREATE TABLE auth_roles (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128)
) STRICT;

CREATE TABLE auth_role_permissions (
    role_id    INTEGER NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    permission TEXT NOT NULL
        CHECK (length(permission) BETWEEN 1 AND 128 AND instr(permission, char(10)) = 0),
    PRIMARY KEY (role_id, permission)
) STRICT;

CREATE TABLE auth_user_roles (
    user_id INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
) STRICT;
CREATE INDEX auth_user_roles_role_id_idx ON auth_user_roles (role_id);

CREATE TABLE auth_user_permissions (
    user_id    INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL
        CHECK (length(permission) BETWEEN 1 AND 128 AND instr(permission, char(10)) = 0),
    PRIMARY KEY (user_id, permission)
) STRICT;

CREATE TABLE auth_sessions (
    -- Public session id: the part of the token before the dot (16 random bytes, base64url).
    id               TEXT PRIMARY KEY
        CHECK (length(id) = 22 AND id NOT GLOB '*[^A-Za-z0-9_-]*'),
    -- SHA-256 of the token's 32-byte secret. The secret itself is never stored.
    secret_hash      BLOB NOT NULL CHECK (length(secret_hash) = 32),
    user_id          INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    created_at       INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    last_seen_at     INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    idle_expires_at  INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    authenticated_at INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    user_agent       TEXT NULL,
    ip               TEXT NULL,
    CHECK (idle_expires_at <= expires_at)
) STRICT;
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id, last_seen_at);
CREATE INDEX auth_sessions_expires_at_idx ON auth_sessions (expires_at);
CREATE INDEX auth_sessions_idle_expires_at_idx ON auth_sessions (idle_expires_at);

-- Effective permissions -------------------------------------------------------------------------

CREATE VIEW auth_effective_permissions (user_id, permission) AS
    SELECT user_id, permission FROM auth_user_permissions
    UNION
    SELECT ur.user_id, rp.permission
      FROM auth_user_roles ur
      JOIN auth_role_permissions rp ON rp.role_id = ur.role_id;

-- Each trigger recomputes auth_users.permissions of the users a change touches. SQLite runs one
-- writer at a time, so no locking is needed for concurrent grants.

CREATE TRIGGER auth_user_permissions_insert AFTER INSERT ON auth_user_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id = NEW.user_id;
END;

CREATE TRIGGER auth_user_permissions_delete AFTER DELETE ON auth_user_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id = OLD.user_id;
END;

CREATE TRIGGER auth_user_permissions_update AFTER UPDATE ON auth_user_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id IN (OLD.user_id, NEW.user_id);
END;

CREATE TRIGGER auth_user_roles_insert AFTER INSERT ON auth_user_roles BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id = NEW.user_id;
END;

CREATE TRIGGER auth_user_roles_delete AFTER DELETE ON auth_user_roles BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id = OLD.user_id;
END;

CREATE TRIGGER auth_user_roles_update AFTER UPDATE ON auth_user_roles BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id IN (OLD.user_id, NEW.user_id);
END;

CREATE TRIGGER auth_role_permissions_insert AFTER INSERT ON auth_role_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id IN (SELECT user_id FROM auth_user_roles WHERE role_id = NEW.role_id);
END;

CREATE TRIGGER auth_role_permissions_delete AFTER DELETE ON auth_role_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id IN (SELECT user_id FROM auth_user_roles WHERE role_id = OLD.role_id);
END;

CREATE TRIGGER auth_role_permissions_update AFTER UPDATE ON auth_role_permissions BEGIN
    UPDATE auth_users SET permissions = coalesce((
        SELECT group_concat(permission, char(10)) FROM (
            SELECT permission FROM auth_effective_permissions
             WHERE user_id = auth_users.id ORDER BY permission)), '')
     WHERE id IN (SELECT user_id FROM auth_user_roles WHERE role_id IN (OLD.role_id, NEW.role_id));
END;
