-- A role's row is written, not only locked, by a change to its permissions and by an
-- assignment of it.
--
-- The locks of 20261202000001_role_lock make the second of the two wait for the first. Under
-- READ COMMITTED its later statements then see the first; under REPEATABLE READ or SERIALIZABLE
-- (a database's default_transaction_isolation, or an app's own transaction) they read the
-- snapshot taken before the wait, and a row that was only locked meanwhile raises no conflict:
-- a permission revoked from a role while the role was being given stayed in the new member's
-- auth_users.permissions for good. Postgres raises a serialization failure (SQLSTATE 40001, to
-- be retried) in a snapshot transaction that writes a row written by a transaction committed
-- after its snapshot; so both sides now write the role's row (a no-op write of its name, which
-- changes no key and fires no trigger), and the second one, if it reads from a snapshot, fails
-- instead of committing a stale picture. Under READ COMMITTED nothing changes but this: two
-- assignments of one role take turns too (a transaction that gives several roles in two
-- orders at once may be aborted as a deadlock, SQLSTATE 40P01, to be retried).
CREATE OR REPLACE FUNCTION auth_lock_role_for_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM auth_roles WHERE id IN (OLD.role_id, NEW.role_id) ORDER BY id FOR UPDATE;
    UPDATE auth_roles SET name = name WHERE id IN (OLD.role_id, NEW.role_id);
    RETURN coalesce(NEW, OLD);
END;
$$;

CREATE OR REPLACE FUNCTION auth_lock_role_for_assignment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_roles SET name = name WHERE id = NEW.role_id;
    RETURN NEW;
END;
$$;
