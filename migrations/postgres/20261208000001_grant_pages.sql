-- Pages of scoped grants (`Accounts::holders`, `Accounts::resource_ids`) read in index order
-- and stop at the page's end, however many grants there are; before, each page read and sorted
-- every holder of the resource, or every grant of the user, and `holders` every global holder.
--
-- Resource ids are listed in byte order. Their column now compares in byte order itself, so the
-- primary keys serve a user's pages; equality is unchanged (both collations are deterministic).
-- Holders of one resource are listed by user id: the resource indexes end in it.
--
-- Built inside the migration's transaction, this holds writes to the two tables while their
-- indexes are rebuilt: on large tables, migrate at a quiet time.
ALTER TABLE auth_user_resource_permissions ALTER COLUMN resource_id TYPE TEXT COLLATE "C";
ALTER TABLE auth_user_resource_roles ALTER COLUMN resource_id TYPE TEXT COLLATE "C";

DROP INDEX auth_user_resource_permissions_resource_idx;
CREATE INDEX auth_user_resource_permissions_holders_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission, user_id);
DROP INDEX auth_user_resource_roles_resource_idx;
CREATE INDEX auth_user_resource_roles_holders_idx
    ON auth_user_resource_roles (resource_type, resource_id, user_id);
