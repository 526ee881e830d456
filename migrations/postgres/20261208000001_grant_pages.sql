-- Pages of scoped grants (`Accounts::holders`, `Accounts::resource_ids`) read in index order
-- and stop at the page's end; before, each page read and sorted every holder of the resource,
-- or every grant of the user, and `holders` every global holder.
--
-- Holders of one resource are listed by user id: the `_holders_idx` indexes end in it. A user's
-- resource ids are listed in byte order: the `_pages_idx` indexes hold them in the "C"
-- collation (the columns keep theirs). The indexes these replace are dropped last.
--
-- Built inside the migration's transaction, each index holds writes to its table (not reads)
-- while it builds; dropping the old ones then holds both tables for the rest of the
-- transaction. On large tables, build the four by hand first with `CREATE INDEX CONCURRENTLY`
-- and these names, and this finds them there.
CREATE INDEX IF NOT EXISTS auth_user_resource_permissions_holders_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission, user_id);
CREATE INDEX IF NOT EXISTS auth_user_resource_roles_holders_idx
    ON auth_user_resource_roles (resource_type, resource_id, user_id);
CREATE INDEX IF NOT EXISTS auth_user_resource_permissions_pages_idx
    ON auth_user_resource_permissions (user_id, resource_type, permission, resource_id COLLATE "C");
CREATE INDEX IF NOT EXISTS auth_user_resource_roles_pages_idx
    ON auth_user_resource_roles (user_id, resource_type, resource_id COLLATE "C");

DROP INDEX auth_user_resource_permissions_resource_idx;
DROP INDEX auth_user_resource_roles_resource_idx;
