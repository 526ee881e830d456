-- Pages of scoped grants read in index order (see the Postgres migration of the same name;
-- SQLite's text already compares in byte order, so the roles' primary key serves a user's
-- pages).
CREATE INDEX auth_user_resource_permissions_holders_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission, user_id);
CREATE INDEX auth_user_resource_roles_holders_idx
    ON auth_user_resource_roles (resource_type, resource_id, user_id);
CREATE INDEX auth_user_resource_permissions_pages_idx
    ON auth_user_resource_permissions (user_id, resource_type, permission, resource_id);
DROP INDEX auth_user_resource_permissions_resource_idx;
DROP INDEX auth_user_resource_roles_resource_idx;
