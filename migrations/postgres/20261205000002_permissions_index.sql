-- `Accounts::holders` finds the users who hold a permission globally by their effective
-- permissions (`permissions @> ARRAY[…]`): this index serves it, where a scan of every user
-- ran before on each call. Built inside the migration's transaction, it holds writes to
-- auth_users (bans, grants, password changes) while it builds: on a large table, build it
-- first by hand with `CREATE INDEX CONCURRENTLY auth_users_permissions ON auth_users USING gin
-- (permissions)`, and this finds it there.
CREATE INDEX IF NOT EXISTS auth_users_permissions ON auth_users USING gin (permissions);
