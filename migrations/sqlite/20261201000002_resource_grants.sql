-- Grants scoped to one resource (see the Postgres migration of the same name).
CREATE TABLE auth_user_resource_permissions (
    user_id       INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    permission    TEXT NOT NULL CHECK (length(permission) BETWEEN 1 AND 128),
    resource_type TEXT NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 64),
    resource_id   TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 128),
    PRIMARY KEY (user_id, resource_type, resource_id, permission)
) STRICT;
CREATE INDEX auth_user_resource_permissions_resource_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission);

CREATE TABLE auth_user_resource_roles (
    user_id       INTEGER NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role_id       INTEGER NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 64),
    resource_id   TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 128),
    PRIMARY KEY (user_id, resource_type, resource_id, role_id)
) STRICT;
CREATE INDEX auth_user_resource_roles_role_idx ON auth_user_resource_roles (role_id);
CREATE INDEX auth_user_resource_roles_resource_idx
    ON auth_user_resource_roles (resource_type, resource_id);
