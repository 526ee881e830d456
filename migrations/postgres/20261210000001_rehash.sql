-- A login that finds the user's password hashed with parameters other than the crate's (an
-- imported hash, or older defaults) stores it again with the crate's. It is the same password:
-- the sessions and links issued under it stay. The rehash counts itself in
-- `password_rehashes` (one more, in the same UPDATE), which tells it apart from a password
-- changed by hand; any other change of the hash (a counter set otherwise too, as a restore
-- from a backup might) still moves the credential epoch.
ALTER TABLE auth_users ADD COLUMN password_rehashes BIGINT NOT NULL DEFAULT 0;

DROP TRIGGER auth_users_password_epoch ON auth_users;
CREATE TRIGGER auth_users_password_epoch
BEFORE UPDATE OF password_hash ON auth_users
FOR EACH ROW
WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash
      AND NEW.password_rehashes <> OLD.password_rehashes + 1)
EXECUTE FUNCTION auth_password_epoch();
