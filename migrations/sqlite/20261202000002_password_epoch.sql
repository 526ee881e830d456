-- A password hash changed by anything but the crate (an operator's UPDATE, the sqlite3 shell)
-- moves the user to a new credential epoch, as the crate's own password changes do: every
-- session and every reset link issued under the old password ends. Before, sessions survived a
-- password set by hand. The crate's own statements already move the epoch in the same UPDATE,
-- which this leaves alone.
CREATE TRIGGER auth_users_password_epoch AFTER UPDATE OF password_hash ON auth_users
WHEN NEW.password_hash IS NOT OLD.password_hash
 AND NEW.credential_epoch = OLD.credential_epoch
BEGIN
    UPDATE auth_users SET credential_epoch = credential_epoch + 1 WHERE id = NEW.id;
END;
