-- The trigger that fills email_normalized for writers that do not supply it now says in its
-- WHEN clause when it has work to do, so a row the application writes with the column already
-- set (every insert and update the sync and the API make) does not call the PL/pgSQL function
-- at all. The function and what it does are unchanged.
DROP TRIGGER contacts_fill_email_normalized ON contacts;

CREATE TRIGGER contacts_fill_email_normalized_on_insert BEFORE INSERT ON contacts
    FOR EACH ROW WHEN (NEW.email_normalized IS NULL AND NEW.email IS NOT NULL)
    EXECUTE FUNCTION contacts_fill_email_normalized();

CREATE TRIGGER contacts_fill_email_normalized_on_update BEFORE UPDATE OF email, email_normalized
    ON contacts
    FOR EACH ROW WHEN (NEW.email IS DISTINCT FROM OLD.email
                       AND NEW.email_normalized IS NOT DISTINCT FROM OLD.email_normalized)
    EXECUTE FUNCTION contacts_fill_email_normalized();
