-- Holders of one resource listed by user id from the index (see the Postgres migration of the
-- same name; SQLite's text already compares in byte order).
DROP INDEX auth_user_resource_permissions_resource_idx;
CREATE INDEX auth_user_resource_permissions_holders_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission, user_id);
DROP INDEX auth_user_resource_roles_resource_idx;
CREATE INDEX auth_user_resource_roles_holders_idx
    ON auth_user_resource_roles (resource_type, resource_id, user_id);
