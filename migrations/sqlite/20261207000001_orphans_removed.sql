-- Deletes made with foreign keys off (the sqlite3 shell's default) before 20261202000001 left
-- behind the rows of users and roles that no longer exist: sessions, links and grants, which a
-- user or role created later under the same id took over (ids were reused before
-- 20261203000001, and that migration's counter starts past the ids that still exist, not past
-- the deleted ones). The counters move past every id still named anywhere; then those rows go,
-- and every user's effective permissions are computed again without them.
INSERT INTO sqlite_sequence (name, seq)
SELECT name, 0 FROM (SELECT 'auth_users' AS name UNION ALL SELECT 'auth_roles')
 WHERE name NOT IN (SELECT name FROM sqlite_sequence);

UPDATE sqlite_sequence
   SET seq = max(seq, coalesce((SELECT max(user_id) FROM (
           SELECT user_id FROM auth_sessions UNION ALL SELECT user_id FROM auth_tokens
           UNION ALL SELECT user_id FROM auth_user_permissions
           UNION ALL SELECT user_id FROM auth_user_roles
           UNION ALL SELECT user_id FROM auth_user_resource_permissions
           UNION ALL SELECT user_id FROM auth_user_resource_roles)), 0))
 WHERE name = 'auth_users';

UPDATE sqlite_sequence
   SET seq = max(seq, coalesce((SELECT max(role_id) FROM (
           SELECT role_id FROM auth_role_permissions UNION ALL SELECT role_id FROM auth_user_roles
           UNION ALL SELECT role_id FROM auth_user_resource_roles)), 0))
 WHERE name = 'auth_roles';

-- A role's grants first, so that no recomputation below reads them again.
DELETE FROM auth_role_permissions WHERE role_id NOT IN (SELECT id FROM auth_roles);
DELETE FROM auth_user_roles
 WHERE user_id NOT IN (SELECT id FROM auth_users) OR role_id NOT IN (SELECT id FROM auth_roles);
DELETE FROM auth_user_resource_roles
 WHERE user_id NOT IN (SELECT id FROM auth_users) OR role_id NOT IN (SELECT id FROM auth_roles);
DELETE FROM auth_user_permissions WHERE user_id NOT IN (SELECT id FROM auth_users);
DELETE FROM auth_user_resource_permissions WHERE user_id NOT IN (SELECT id FROM auth_users);
DELETE FROM auth_tokens WHERE user_id NOT IN (SELECT id FROM auth_users);
DELETE FROM auth_sessions WHERE user_id NOT IN (SELECT id FROM auth_users);

UPDATE auth_users
   SET permissions = coalesce((SELECT group_concat(permission, char(10)) FROM (
           SELECT permission FROM auth_effective_permissions
            WHERE user_id = auth_users.id ORDER BY permission)), '');
