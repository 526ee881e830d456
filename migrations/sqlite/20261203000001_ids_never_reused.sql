-- no-transaction
-- A rowid table gives a new row max(id) + 1: once the user (or role) with the highest id was
-- deleted, the next one created took the same id, and whatever an app kept under that id (its
-- own rows, logs, caches) now named someone else. Postgres never hands out an identity twice;
-- with AUTOINCREMENT, SQLite does not either.
--
-- AUTOINCREMENT needs the tables rebuilt. Dropping the old table with foreign keys on would
-- cascade to every session and grant, and foreign keys cannot be switched off inside a
-- transaction, so this migration opens its own (hence `no-transaction` above). With
-- legacy_alter_table on and foreign keys off, the rename leaves the other tables' references
-- to `auth_users` and `auth_roles` as they are: they name the rebuilt tables.
PRAGMA foreign_keys = OFF;
PRAGMA legacy_alter_table = ON;
BEGIN IMMEDIATE;

CREATE TABLE auth_users_rebuilt (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    username          TEXT NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    password_hash     TEXT NULL,
    -- Non-null means banned: no request of this user authenticates.
    disabled_at       INTEGER NULL,
    created_at        INTEGER NOT NULL DEFAULT (CAST(unixepoch('subsec') * 1000 AS INTEGER)),
    -- Effective permissions (direct grants plus role grants), sorted, one per line. Maintained
    -- by triggers in the same transaction as the grant. Do not write it by hand.
    permissions       TEXT NOT NULL DEFAULT '',
    credential_epoch  INTEGER NOT NULL DEFAULT 0,
    email             TEXT NULL CHECK (email IS NULL OR length(email) BETWEEN 3 AND 254),
    email_verified_at INTEGER NULL
) STRICT;
INSERT INTO auth_users_rebuilt (id, username, password_hash, disabled_at, created_at,
    permissions, credential_epoch, email, email_verified_at)
    SELECT id, username, password_hash, disabled_at, created_at, permissions, credential_epoch,
        email, email_verified_at FROM auth_users;
DROP TABLE auth_users;
ALTER TABLE auth_users_rebuilt RENAME TO auth_users;
CREATE UNIQUE INDEX auth_users_username_key ON auth_users (lower(username));
CREATE UNIQUE INDEX auth_users_email_key ON auth_users (lower(email));

CREATE TABLE auth_roles_rebuilt (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128)
) STRICT;
INSERT INTO auth_roles_rebuilt (id, name) SELECT id, name FROM auth_roles;
DROP TABLE auth_roles;
ALTER TABLE auth_roles_rebuilt RENAME TO auth_roles;

-- The triggers on the old tables went with them; these are the same.
CREATE TRIGGER auth_users_delete_dependents AFTER DELETE ON auth_users BEGIN
    DELETE FROM auth_sessions WHERE user_id = OLD.id;
    DELETE FROM auth_tokens WHERE user_id = OLD.id;
    DELETE FROM auth_user_roles WHERE user_id = OLD.id;
    DELETE FROM auth_user_permissions WHERE user_id = OLD.id;
    DELETE FROM auth_user_resource_roles WHERE user_id = OLD.id;
    DELETE FROM auth_user_resource_permissions WHERE user_id = OLD.id;
END;
CREATE TRIGGER auth_roles_delete_dependents AFTER DELETE ON auth_roles BEGIN
    DELETE FROM auth_role_permissions WHERE role_id = OLD.id;
    DELETE FROM auth_user_roles WHERE role_id = OLD.id;
    DELETE FROM auth_user_resource_roles WHERE role_id = OLD.id;
END;
CREATE TRIGGER auth_users_password_epoch AFTER UPDATE OF password_hash ON auth_users
WHEN NEW.password_hash IS NOT OLD.password_hash
 AND NEW.credential_epoch = OLD.credential_epoch
BEGIN
    UPDATE auth_users SET credential_epoch = credential_epoch + 1 WHERE id = NEW.id;
END;

COMMIT;
PRAGMA legacy_alter_table = OFF;
PRAGMA foreign_keys = ON;
