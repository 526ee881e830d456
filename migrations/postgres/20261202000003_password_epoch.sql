-- A password hash changed by anything but the crate (an operator's UPDATE, another tool) moves
-- the user to a new credential epoch, as the crate's own password changes do: every session
-- and every reset link issued under the old password ends, on every node (the epoch's change
-- is notified). Before, sessions survived a password set by hand. The crate's own statements
-- already move the epoch in the same UPDATE, which this leaves alone.
CREATE FUNCTION auth_password_epoch() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.credential_epoch = OLD.credential_epoch THEN
        NEW.credential_epoch := OLD.credential_epoch + 1;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER auth_users_password_epoch
BEFORE UPDATE OF password_hash ON auth_users
FOR EACH ROW
WHEN (NEW.password_hash IS DISTINCT FROM OLD.password_hash)
EXECUTE FUNCTION auth_password_epoch();
