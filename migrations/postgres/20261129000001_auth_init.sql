-- axum-live-auth: users, roles, grants and sessions.
--
-- Table and column names are a contract: applications, examples and outside tools read and
-- write these tables directly (a ban in psql is enforced on the next request).

CREATE TABLE auth_users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
    password_hash TEXT NULL,
    -- Non-null means banned: no request of this user authenticates.
    disabled_at   TIMESTAMPTZ NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Effective permissions (direct grants plus role grants), sorted and distinct. Maintained by
    -- the triggers below in the same transaction as the grant, so that the per-request lookup
    -- reads one column instead of joining the grant tables. Do not write it by hand.
    permissions   TEXT[] NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX auth_users_username_key ON auth_users (lower(username));

CREATE TABLE auth_roles (
    id   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128)
);

CREATE TABLE auth_role_permissions (
    role_id    BIGINT NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    permission TEXT NOT NULL CHECK (length(permission) BETWEEN 1 AND 128),
    PRIMARY KEY (role_id, permission)
);

CREATE TABLE auth_user_roles (
    user_id BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    role_id BIGINT NOT NULL REFERENCES auth_roles (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX auth_user_roles_role_id_idx ON auth_user_roles (role_id);

CREATE TABLE auth_user_permissions (
    user_id    BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    permission TEXT NOT NULL CHECK (length(permission) BETWEEN 1 AND 128),
    PRIMARY KEY (user_id, permission)
);

CREATE TABLE auth_sessions (
    -- Public session id: the part of the token before the dot (16 random bytes, base64url).
    -- It names the session in listings, logs and routes; it is not a credential.
    id               TEXT COLLATE "C" PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{22}$'),
    -- SHA-256 of the token's 32-byte secret. The secret itself is never stored.
    secret_hash      BYTEA NOT NULL CHECK (octet_length(secret_hash) = 32),
    user_id          BIGINT NOT NULL REFERENCES auth_users (id) ON DELETE CASCADE,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Pushed forward at most once per touch interval, never past expires_at.
    idle_expires_at  TIMESTAMPTZ NOT NULL,
    -- Absolute deadline, fixed at creation.
    expires_at       TIMESTAMPTZ NOT NULL,
    -- When the user last proved their password in this session.
    authenticated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    user_agent       TEXT NULL,
    ip               INET NULL,
    CHECK (idle_expires_at <= expires_at)
);
CREATE INDEX auth_sessions_user_id_idx ON auth_sessions (user_id, last_seen_at);
CREATE INDEX auth_sessions_expires_at_idx ON auth_sessions (expires_at);
CREATE INDEX auth_sessions_idle_expires_at_idx ON auth_sessions (idle_expires_at);

-- Effective permissions -------------------------------------------------------------------------

-- Recomputes auth_users.permissions for the given users. The user rows are locked first (in id
-- order, so that concurrent refreshes cannot deadlock; NO KEY UPDATE, which does not conflict
-- with the KEY SHARE locks that the grant tables' foreign keys take) and the set is read by a
-- later statement, which in READ COMMITTED sees every grant committed before the lock was
-- obtained: two concurrent grants to one user can therefore never lose one another.
CREATE FUNCTION auth_refresh_permissions(user_ids BIGINT[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM auth_users WHERE id = ANY (user_ids) ORDER BY id FOR NO KEY UPDATE;
    UPDATE auth_users u
       SET permissions = coalesce((
               SELECT array_agg(p.permission ORDER BY p.permission COLLATE "C")
                 FROM (SELECT up.permission
                         FROM auth_user_permissions up
                        WHERE up.user_id = u.id
                        UNION
                       SELECT rp.permission
                         FROM auth_user_roles ur
                         JOIN auth_role_permissions rp ON rp.role_id = ur.role_id
                        WHERE ur.user_id = u.id) p
           ), '{}')
     WHERE u.id = ANY (user_ids);
END;
$$;

CREATE FUNCTION auth_user_grants_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM auth_refresh_permissions(ARRAY[OLD.user_id]);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        PERFORM auth_refresh_permissions(ARRAY[NEW.user_id]);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_user_permissions_refresh
AFTER INSERT OR UPDATE OR DELETE ON auth_user_permissions
FOR EACH ROW EXECUTE FUNCTION auth_user_grants_changed();

CREATE TRIGGER auth_user_roles_refresh
AFTER INSERT OR UPDATE OR DELETE ON auth_user_roles
FOR EACH ROW EXECUTE FUNCTION auth_user_grants_changed();

CREATE FUNCTION auth_role_grants_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    affected BIGINT[];
BEGIN
    SELECT array_agg(DISTINCT ur.user_id) INTO affected
      FROM auth_user_roles ur
     WHERE ur.role_id = OLD.role_id OR ur.role_id = NEW.role_id;
    IF affected IS NOT NULL THEN
        PERFORM auth_refresh_permissions(affected);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER auth_role_permissions_refresh
AFTER INSERT OR UPDATE OR DELETE ON auth_role_permissions
FOR EACH ROW EXECUTE FUNCTION auth_role_grants_changed();
