-- A change to a role's permissions and an assignment of that role take turns.
--
-- A change to a role's permissions finds the users it affects by reading the role's assignments
-- (auth_role_grants_changed, auth_notify_scoped_role); an assignment reads the role's
-- permissions (auth_refresh_permissions, and the scoped checks of every node). Under READ
-- COMMITTED each missed the other's uncommitted row: a permission revoked from a role while the
-- role was being assigned stayed in the new member's auth_users.permissions, and a scoped answer
-- cached in between never heard of the revocation. Now a change to a role's permissions locks the
-- role's row FOR UPDATE, and an assignment locks it FOR KEY SHARE (as its foreign key does, but
-- before the row is written and read), both in BEFORE triggers: whichever comes second waits for
-- the first to commit, and its AFTER triggers then see it.
--
-- The lock order is a role, then its members' rows. A transaction of the app's own that first
-- changes a user's grants or roles and then, in a later statement, gives the user a role takes
-- them the other way round; with a concurrent change of that role's permissions, Postgres may
-- then abort one of the two as a deadlock (SQLSTATE 40P01), to be retried.
CREATE FUNCTION auth_lock_role_for_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM auth_roles WHERE id IN (OLD.role_id, NEW.role_id) ORDER BY id FOR UPDATE;
    RETURN coalesce(NEW, OLD);
END;
$$;

CREATE TRIGGER auth_role_permissions_lock_role
BEFORE INSERT OR UPDATE OR DELETE ON auth_role_permissions
FOR EACH ROW EXECUTE FUNCTION auth_lock_role_for_change();

CREATE FUNCTION auth_lock_role_for_assignment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM auth_roles WHERE id = NEW.role_id FOR KEY SHARE;
    RETURN NEW;
END;
$$;

CREATE TRIGGER auth_user_roles_lock_role
BEFORE INSERT OR UPDATE ON auth_user_roles
FOR EACH ROW EXECUTE FUNCTION auth_lock_role_for_assignment();

CREATE TRIGGER auth_user_resource_roles_lock_role
BEFORE INSERT OR UPDATE ON auth_user_resource_roles
FOR EACH ROW EXECUTE FUNCTION auth_lock_role_for_assignment();
