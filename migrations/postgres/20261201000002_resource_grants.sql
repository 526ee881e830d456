-- Grants scoped to one resource: a type and an id, such as ('project', '42').
--
-- A direct scoped grant gives one permission on one resource; a scoped role assignment gives
-- every permission of the role on one resource. Global grants (the first migration) cover every
-- resource and are unchanged. Scoped grants do not enter auth_users.permissions: they are
-- checked per request, by primary key, and cached per node under the notifications below.
CREATE TABLE auth_user_resource_permissions (
    user_id       BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    permission    TEXT NOT NULL CHECK (length(permission) BETWEEN 1 AND 128),
    resource_type TEXT NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 64),
    resource_id   TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 128),
    PRIMARY KEY (user_id, resource_type, resource_id, permission)
);
CREATE INDEX auth_user_resource_permissions_resource_idx
    ON auth_user_resource_permissions (resource_type, resource_id, permission);

CREATE TABLE auth_user_resource_roles (
    user_id       BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role_id       BIGINT NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL CHECK (length(resource_type) BETWEEN 1 AND 64),
    resource_id   TEXT NOT NULL CHECK (length(resource_id) BETWEEN 1 AND 128),
    PRIMARY KEY (user_id, resource_type, resource_id, role_id)
);
CREATE INDEX auth_user_resource_roles_role_idx ON auth_user_resource_roles (role_id);
CREATE INDEX auth_user_resource_roles_resource_idx
    ON auth_user_resource_roles (resource_type, resource_id);

-- Notifications: 'r:<user id>' when a user's scoped grants change; 'r:*' when a role's
-- permissions change and the role has scoped assignments (or on TRUNCATE).
CREATE FUNCTION auth_notify_scoped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('axum_live_auth', 'r:' || OLD.user_id);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM pg_notify('axum_live_auth', 'r:' || NEW.user_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_user_resource_permissions_notify
AFTER INSERT OR UPDATE OR DELETE ON auth_user_resource_permissions
FOR EACH ROW EXECUTE FUNCTION auth_notify_scoped();

CREATE TRIGGER auth_user_resource_roles_notify
AFTER INSERT OR UPDATE OR DELETE ON auth_user_resource_roles
FOR EACH ROW EXECUTE FUNCTION auth_notify_scoped();

CREATE FUNCTION auth_notify_scoped_role() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM auth_user_resource_roles
                WHERE role_id = OLD.role_id OR role_id = NEW.role_id) THEN
        PERFORM pg_notify('axum_live_auth', 'r:*');
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_role_permissions_notify_scoped
AFTER INSERT OR UPDATE OR DELETE ON auth_role_permissions
FOR EACH ROW EXECUTE FUNCTION auth_notify_scoped_role();

CREATE FUNCTION auth_notify_scoped_all() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('axum_live_auth', 'r:*');
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_user_resource_permissions_truncate
AFTER TRUNCATE ON auth_user_resource_permissions
FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_scoped_all();

CREATE TRIGGER auth_user_resource_roles_truncate
AFTER TRUNCATE ON auth_user_resource_roles
FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_scoped_all();

CREATE TRIGGER auth_role_permissions_truncate_scoped
AFTER TRUNCATE ON auth_role_permissions
FOR EACH STATEMENT EXECUTE FUNCTION auth_notify_scoped_all();
