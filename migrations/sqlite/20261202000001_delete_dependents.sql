-- Deleting a user or a role deletes what depends on it, also on a connection with foreign keys
-- off (the sqlite3 shell's default), where ON DELETE CASCADE does nothing. Without this, a user
-- deleted from the shell left their sessions behind, and since row ids are reused, the next
-- user created took the deleted one's id: the old session cookie logged in as the new user,
-- who also inherited the old grants. With foreign keys on, the cascade has already run and
-- these delete nothing.
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
