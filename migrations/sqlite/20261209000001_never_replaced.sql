-- A REPLACE (or INSERT OR REPLACE) deletes the row it conflicts with without firing that row's
-- delete triggers (unless recursive_triggers is on, which neither the crate nor the sqlite3
-- shell sets), and with foreign keys off, the shell's default, nothing cascades either.
-- Replacing a role left its grants and members behind under its old id, which the role's name
-- no longer reaches: its members kept its permissions, and neither unassign_role nor
-- revoke_role_permission could take them away. Replacing a user by id reset its credential
-- epoch, which brought back the sessions a password change had ended. So a role is never
-- replaced (the insert is ignored, as ON CONFLICT DO NOTHING would do: the role stays as it
-- was), and a user row is never replaced by id (refused: UPDATE it instead). A user replaced
-- by name gets a new id, which no old session or grant names.
CREATE TRIGGER auth_roles_never_replaced BEFORE INSERT ON auth_roles
WHEN EXISTS (SELECT 1 FROM auth_roles WHERE name = NEW.name OR id = NEW.id)
BEGIN
    SELECT RAISE(IGNORE);
END;

CREATE TRIGGER auth_users_never_replaced BEFORE INSERT ON auth_users
WHEN EXISTS (SELECT 1 FROM auth_users WHERE id = NEW.id)
BEGIN
    SELECT RAISE(ABORT, 'auth_users: a user row is never replaced; UPDATE it instead');
END;
