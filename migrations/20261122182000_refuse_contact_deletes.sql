-- The sync never deletes a contact, and discovery never deletes a managed tenant (it marks it
-- missing). Make that a database invariant: a DELETE of either is refused, whichever code path
-- (or person with a SQL prompt) issues it. Inactivation is the only way out for a contact.
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rows of % are never deleted', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$;

CREATE TRIGGER contacts_are_never_deleted
    BEFORE DELETE ON contacts FOR EACH ROW EXECUTE FUNCTION refuse_delete();

CREATE TRIGGER managed_tenants_are_never_deleted
    BEFORE DELETE ON managed_tenants FOR EACH ROW EXECUTE FUNCTION refuse_delete();
