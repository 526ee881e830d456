-- Seed data for the pgbench comparison (applied after the crate's migrations).
-- 10,000 users, 20 roles x 5 permissions, 2 roles + 3 direct permissions per user,
-- 20,000 live sessions (2 per user), plus the baseline table bench_pk and the id lookup bench_ids.
\set ON_ERROR_STOP 1
BEGIN;

INSERT INTO auth_users (username, password_hash)
SELECT 'user' || i, '$argon2id$v=19$m=19456,t=2,p=1$placeholder$placeholder'
  FROM generate_series(1, 10000) AS i;

INSERT INTO auth_roles (name) SELECT 'role' || r FROM generate_series(1, 20) AS r;

INSERT INTO auth_role_permissions (role_id, permission)
SELECT ro.id, 'role' || r || '.perm' || k
  FROM generate_series(1, 20) AS r
  JOIN auth_roles ro ON ro.name = 'role' || r
 CROSS JOIN generate_series(1, 5) AS k;

-- Bulk grants: skip the per-row refresh triggers and refresh every user once afterwards with
-- the migration's own function (same end state as granting row by row).
ALTER TABLE auth_user_roles DISABLE TRIGGER auth_user_roles_refresh;
ALTER TABLE auth_user_permissions DISABLE TRIGGER auth_user_permissions_refresh;

INSERT INTO auth_user_roles (user_id, role_id)
SELECT u.id, ro.id
  FROM auth_users u
 CROSS JOIN LATERAL (VALUES ((u.id % 20) + 1), (((u.id + 7) % 20) + 1)) AS v(r)
  JOIN auth_roles ro ON ro.name = 'role' || v.r;

INSERT INTO auth_user_permissions (user_id, permission)
SELECT u.id, 'direct.perm' || (((u.id * 3 + k) % 50) + 1)
  FROM auth_users u
 CROSS JOIN generate_series(0, 2) AS k;

ALTER TABLE auth_user_roles ENABLE TRIGGER auth_user_roles_refresh;
ALTER TABLE auth_user_permissions ENABLE TRIGGER auth_user_permissions_refresh;

DO $$ BEGIN PERFORM auth_refresh_permissions(array_agg(id)) FROM auth_users; END $$;

-- 2 sessions per user; id = first 22 chars of base64url(sha256(...)), secret_hash = sha256.
INSERT INTO auth_sessions (id, secret_hash, user_id, idle_expires_at, expires_at,
                           user_agent, ip)
SELECT substr(translate(encode(sha256(convert_to('sid:' || u.id || ':' || k || ':' || random(), 'UTF8')),
                               'base64'), '+/', '-_'), 1, 22),
       sha256(convert_to('secret:' || u.id || ':' || k || ':' || random(), 'UTF8')),
       u.id,
       now() + interval '30 minutes',
       now() + interval '12 hours',
       'Mozilla/5.0 (X11; Linux x86_64) bench',
       '127.0.0.1'
  FROM auth_users u
 CROSS JOIN generate_series(1, 2) AS k;

-- Grants scoped to a resource: 100,000 in all, 1,000 per user for users 1 to 100 (projects
-- 1 to 1000), half of them direct and half through a role assigned on the project. The
-- permission is `project.read`: pgbench would read the colon of `project:read` as a variable.
INSERT INTO auth_roles (name) VALUES ('project-manager');
INSERT INTO auth_role_permissions (role_id, permission)
SELECT id, p FROM auth_roles, (VALUES ('project.read'), ('project.write')) v(p)
 WHERE name = 'project-manager';
INSERT INTO auth_user_resource_permissions (user_id, permission, resource_type, resource_id)
SELECT u, 'project.read', 'project', p::text
  FROM generate_series(1, 100) AS u, generate_series(1, 1000, 2) AS p;
INSERT INTO auth_user_resource_roles (user_id, role_id, resource_type, resource_id)
SELECT u, (SELECT id FROM auth_roles WHERE name = 'project-manager'), 'project', p::text
  FROM generate_series(1, 100) AS u, generate_series(2, 1000, 2) AS p;

-- Baseline: a plain one-row primary-key lookup over the same ids.
CREATE TABLE bench_pk (id TEXT COLLATE "C" PRIMARY KEY, v BIGINT);
INSERT INTO bench_pk (id, v) SELECT id, user_id FROM auth_sessions;

-- n -> session id, used identically by every script to pick a random existing session.
CREATE TABLE bench_ids (n INT PRIMARY KEY, id TEXT COLLATE "C" NOT NULL);
INSERT INTO bench_ids (n, id) SELECT row_number() OVER (ORDER BY id), id FROM auth_sessions;

COMMIT;

VACUUM ANALYZE;
