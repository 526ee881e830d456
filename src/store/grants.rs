//! Grants scoped to one resource (a type and an id, such as `project` `42`): direct grants and
//! role assignments. Global grants live in `users.rs` and reach `auth_users.permissions`.

use super::{AuthStore, Dialects, affected, on_pool};
use crate::{Error, Resource, UserId};

/// Whether the user holds the permission on the resource through a scoped grant or a scoped
/// role: one statement, two primary-key probes.
const CAN: &str = "\
SELECT EXISTS (SELECT 1 FROM auth_user_resource_permissions
                WHERE user_id = $1 AND resource_type = $2 AND resource_id = $3
                  AND permission = $4)
    OR EXISTS (SELECT 1 FROM auth_user_resource_roles ur
                 JOIN auth_role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $4
                WHERE ur.user_id = $1 AND ur.resource_type = $2 AND ur.resource_id = $3)";

/// The ids of resources of type $2 on which user $1 holds $3 by a scoped grant, after $4, $5
/// at most, in byte order: compared in the collation given, the one of the `_pages_idx`
/// indexes (and of the roles' primary key on SQLite), so each branch reads a page from an
/// index, in order, and stops. The direct branch reads only grants of $3; the role branch
/// passes over the user's assignments of roles without $3 one by one. Every id is longer than
/// `''`, so no `$4` means from the first.
macro_rules! resources_of {
    ($collate:literal) => {
        concat!(
            "\
SELECT resource_id FROM (
    SELECT resource_id FROM (
        SELECT resource_id ",
            $collate,
            " AS resource_id FROM auth_user_resource_permissions
         WHERE user_id = $1 AND resource_type = $2 AND permission = $3
           AND resource_id ",
            $collate,
            " > coalesce($4, '')
         ORDER BY 1 LIMIT $5) direct
    UNION
    SELECT resource_id FROM (
        SELECT DISTINCT ur.resource_id ",
            $collate,
            " AS resource_id
          FROM auth_user_resource_roles ur
          JOIN auth_role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $3
         WHERE ur.user_id = $1 AND ur.resource_type = $2
           AND ur.resource_id ",
            $collate,
            " > coalesce($4, '')
         ORDER BY 1 LIMIT $5) by_role) r
 ORDER BY resource_id
 LIMIT $5"
        )
    };
}

const RESOURCES_OF: Dialects = Dialects {
    postgres: resources_of!("COLLATE \"C\""),
    sqlite: resources_of!("COLLATE BINARY"),
};

/// The enabled users holding $1 on resource ($2, $3) — scoped or global — with ids above $4, $5
/// at most, given how the database tests that a user's global permissions include $1. Each
/// branch keeps only enabled users itself. The scoped ones read at most a page, in id order,
/// from the `_holders_idx` indexes: a page costs the same however many hold the permission on
/// the resource. The global one first walks the next 1 000 users in id order (`probe`): for a
/// permission that many hold, that finds the page at once. Only when it does not is the whole
/// set of global holders above $4 read (on Postgres from its index, which finds a rare
/// permission's holders at once) and sorted, which is large only for a permission held by fewer
/// than a page in 1 000 users (5% for pages of 50) yet by many of them: walking in id order
/// alone, Postgres would read every user for a permission few hold, since it cannot tell how
/// few.
macro_rules! holders {
    ($holds:literal, $unless_walked:literal) => {
        concat!(
            "\
WITH probe AS (
    SELECT id FROM (SELECT id, permissions, disabled_at FROM auth_users
                     WHERE id > $4 ORDER BY id LIMIT 1000) ahead
     WHERE ",
            $holds,
            " AND disabled_at IS NULL
     ORDER BY id LIMIT $5)
SELECT id FROM (
    SELECT id FROM (
        SELECT p.user_id AS id FROM auth_user_resource_permissions p
          JOIN auth_users u ON u.id = p.user_id AND u.disabled_at IS NULL
         WHERE p.resource_type = $2 AND p.resource_id = $3 AND p.permission = $1
           AND p.user_id > $4
         ORDER BY p.user_id LIMIT $5) direct
    UNION
    SELECT id FROM (
        SELECT DISTINCT ur.user_id AS id FROM auth_user_resource_roles ur
          JOIN auth_role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $1
          JOIN auth_users u ON u.id = ur.user_id AND u.disabled_at IS NULL
         WHERE ur.resource_type = $2 AND ur.resource_id = $3 AND ur.user_id > $4
         ORDER BY ur.user_id LIMIT $5) by_role
    UNION
    SELECT id FROM probe
    UNION
    SELECT id FROM auth_users
     WHERE ",
            $holds,
            "
       AND disabled_at IS NULL AND ",
            $unless_walked,
            ") h
 ORDER BY id
 LIMIT $5"
        )
    };
}

/// `holders!` on each database: how a user's global permissions include $1, and how the read of
/// every global holder above $4 is skipped when the walk filled the page. On Postgres the
/// global holders come from index `auth_users_permissions`, and a condition on the walk alone
/// is tested once, before that read; SQLite would test it on each row of a scan of every user
/// above $4, so there the walk's outcome moves the scan's start past the last id instead.
const HOLDERS: Dialects = Dialects {
    postgres: holders!(
        "permissions @> ARRAY[$1]",
        "id > $4 AND (SELECT count(*) FROM probe) < $5"
    ),
    sqlite: holders!(
        "instr(char(10) || permissions || char(10), char(10) || $1 || char(10)) > 0",
        "id > CASE WHEN (SELECT count(*) FROM probe) < $5 THEN $4 ELSE 9223372036854775807 END"
    ),
};

/// A scoped grant or role assignment, to add or remove.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GrantRow<'a> {
    Permission(&'a str),
    Role(&'a str),
}

impl AuthStore {
    pub(crate) async fn can(
        &self,
        user: UserId,
        permission: &str,
        resource: &Resource,
    ) -> Result<bool, sqlx::Error> {
        on_pool!(self, |pool| {
            sqlx::query_scalar(CAN)
                .bind(user)
                .bind(resource.kind())
                .bind(resource.id())
                .bind(permission)
                .fetch_one(pool)
                .await
        })
    }

    pub(crate) async fn resources_of(
        &self,
        user: UserId,
        permission: &str,
        kind: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(RESOURCES_OF.of(pool))
                .bind(user)
                .bind(kind)
                .bind(permission)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    pub(crate) async fn holders(
        &self,
        permission: &str,
        resource: &Resource,
        after: UserId,
        limit: u32,
    ) -> Result<Vec<UserId>, Error> {
        Ok(on_pool!(self, |pool| {
            sqlx::query_scalar(HOLDERS.of(pool))
                .bind(permission)
                .bind(resource.kind())
                .bind(resource.id())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Adds a scoped grant or role assignment; a no-op if it exists. `Err(UserNotFound)` or
    /// `Err(RoleNotFound)` for whichever is missing.
    pub(crate) async fn grant_on(
        &self,
        user: UserId,
        grant: GrantRow<'_>,
        resource: &Resource,
    ) -> Result<(), Error> {
        let (sql, name) = match grant {
            GrantRow::Permission(permission) => (
                "INSERT INTO auth_user_resource_permissions
                        (user_id, permission, resource_type, resource_id)
                 SELECT id, $2, $3, $4 FROM auth_users WHERE id = $1
                 ON CONFLICT DO NOTHING",
                permission,
            ),
            GrantRow::Role(role) => (
                "INSERT INTO auth_user_resource_roles (user_id, role_id, resource_type, resource_id)
                 SELECT u.id, r.id, $3, $4 FROM auth_users u, auth_roles r
                  WHERE u.id = $1 AND r.name = $2
                 ON CONFLICT DO NOTHING",
                role,
            ),
        };
        let done = affected!(self, sql, user, name, resource.kind(), resource.id());
        match (done, grant) {
            (0, GrantRow::Role(role)) => self.user_and_role_exist(user, role).await,
            (0, GrantRow::Permission(_)) if !self.user_exists(user).await? => {
                Err(Error::UserNotFound)
            }
            _ => Ok(()),
        }
    }

    /// Removes a scoped grant or role assignment; `false` if there was none.
    pub(crate) async fn revoke_on(
        &self,
        user: UserId,
        grant: GrantRow<'_>,
        resource: &Resource,
    ) -> Result<bool, Error> {
        let (sql, name) = match grant {
            GrantRow::Permission(permission) => (
                "DELETE FROM auth_user_resource_permissions
                  WHERE user_id = $1 AND permission = $2
                    AND resource_type = $3 AND resource_id = $4",
                permission,
            ),
            GrantRow::Role(role) => (
                "DELETE FROM auth_user_resource_roles
                  WHERE user_id = $1 AND role_id IN (SELECT id FROM auth_roles WHERE name = $2)
                    AND resource_type = $3 AND resource_id = $4",
                role,
            ),
        };
        Ok(affected!(self, sql, user, name, resource.kind(), resource.id()) > 0)
    }
}
