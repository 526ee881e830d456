-- A REPLACE (or INSERT OR REPLACE) deletes the row it conflicts with without firing that row's
-- delete triggers (unless recursive_triggers is on, which neither the crate nor the sqlite3
-- shell sets), and with foreign keys off, the shell's default, nothing cascades either.
-- Replacing a role left its grants and members behind under its old id, which the role's name
-- no longer reaches: its members kept its permissions, and neither unassign_role nor
-- revoke_role_permission could take them away. Replacing a user by id started the row again at
-- the first credential epoch, with the sessions of the row it replaced still there: they went
-- on after a password set that way. So an inserted row finishes what such a delete left
-- undone, as the delete triggers would have: whatever still names the new row's id (a user's,
-- for an id given by hand) or a role that no longer exists goes. An insert of a new id finds
-- nothing to delete; an insert that a conflict turns into nothing (ON CONFLICT DO NOTHING, an
-- upsert's UPDATE, INSERT OR IGNORE) fires no insert trigger. A migration that rebuilds these
-- tables must create these triggers again.
CREATE TRIGGER auth_users_insert_replaces AFTER INSERT ON auth_users BEGIN
    DELETE FROM auth_sessions WHERE user_id = NEW.id;
    DELETE FROM auth_tokens WHERE user_id = NEW.id;
    DELETE FROM auth_user_roles WHERE user_id = NEW.id;
    DELETE FROM auth_user_permissions WHERE user_id = NEW.id;
    DELETE FROM auth_user_resource_roles WHERE user_id = NEW.id;
    DELETE FROM auth_user_resource_permissions WHERE user_id = NEW.id;
END;

CREATE TRIGGER auth_roles_insert_replaces AFTER INSERT ON auth_roles BEGIN
    DELETE FROM auth_role_permissions
     WHERE role_id = NEW.id OR role_id NOT IN (SELECT id FROM auth_roles);
    DELETE FROM auth_user_roles
     WHERE role_id = NEW.id OR role_id NOT IN (SELECT id FROM auth_roles);
    DELETE FROM auth_user_resource_roles
     WHERE role_id = NEW.id OR role_id NOT IN (SELECT id FROM auth_roles);
END;
