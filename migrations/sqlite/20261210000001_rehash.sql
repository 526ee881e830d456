-- A login that finds the user's password hashed with parameters other than the crate's (an
-- imported hash, or older defaults) stores it again with the crate's. It is the same password:
-- the sessions and links issued under it stay. The rehash counts itself in
-- `password_rehashes` (one more, in the same UPDATE), which tells it apart from a password
-- changed by hand; any other change of the hash (a counter set otherwise too, as a restore
-- from a backup might) still moves the credential epoch.
ALTER TABLE auth_users ADD COLUMN password_rehashes INTEGER NOT NULL DEFAULT 0;

DROP TRIGGER auth_users_password_epoch;
CREATE TRIGGER auth_users_password_epoch AFTER UPDATE OF password_hash ON auth_users
WHEN NEW.password_hash IS NOT OLD.password_hash
 AND NEW.credential_epoch = OLD.credential_epoch
 AND NEW.password_rehashes <> OLD.password_rehashes + 1
BEGIN
    UPDATE auth_users SET credential_epoch = credential_epoch + 1 WHERE id = NEW.id;
END;
