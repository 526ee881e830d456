-- An address changed by anything but a confirmation (an operator's UPDATE, another tool) is not
-- verified: nobody proved they receive mail there. A confirmation sets the address and the time
-- it was verified together; a change of the address that leaves that time as it was clears it.
CREATE FUNCTION auth_email_unverified() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.email_verified_at := NULL;
    RETURN NEW;
END;
$$;

CREATE TRIGGER auth_users_email_unverified
BEFORE UPDATE OF email ON auth_users
FOR EACH ROW
WHEN (NEW.email IS DISTINCT FROM OLD.email
      AND NEW.email_verified_at IS NOT DISTINCT FROM OLD.email_verified_at)
EXECUTE FUNCTION auth_email_unverified();
