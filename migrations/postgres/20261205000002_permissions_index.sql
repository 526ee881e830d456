-- `Accounts::holders` finds the users who hold a permission globally by their effective
-- permissions (`permissions @> ARRAY[…]`): this index serves it, where a scan of every user
-- ran before on each call.
CREATE INDEX auth_users_permissions ON auth_users USING gin (permissions);
