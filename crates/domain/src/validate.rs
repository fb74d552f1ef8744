//! Defence against bad directory records (SPEC §5.6): a record that would not fit the PSA or
//! would break a bulk write is skipped with a reason instead of failing the page.

use crate::email::{normalize_email, MAX_EMAIL_LEN};
use crate::model::DirectoryUser;

/// Longest name or job title accepted, in characters.
pub const MAX_NAME_LEN: usize = 1024;
/// Longest phone number accepted, in characters.
pub const MAX_PHONE_LEN: usize = 128;
/// Longest object id accepted; Entra ids are 36-character GUIDs.
pub const MAX_OBJECT_ID_LEN: usize = 256;
/// Longest single `otherMails` or `proxyAddresses` entry (X.500 proxies can be long).
pub const MAX_ADDRESS_ENTRY_LEN: usize = 2048;
/// Most entries accepted in one list field (Exchange allows about 400 proxy addresses).
pub const MAX_LIST_LEN: usize = 1000;

fn check_text(field: &str, value: &str, max_chars: usize) -> Result<(), String> {
    // Control characters (NUL above all, which PostgreSQL text refuses) never belong in these
    // fields; letting one through would fail the whole page's bulk write.
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains a control character"));
    }
    let length = value.chars().count();
    if length > max_chars {
        return Err(format!(
            "{field} is {length} characters long (at most {max_chars})"
        ));
    }
    Ok(())
}

/// Whether the record is fit to plan with; the error says which field is wrong.
pub fn validate_user(user: &DirectoryUser) -> Result<(), String> {
    if user.object_id.trim().is_empty() {
        return Err("object id is empty".to_string());
    }
    check_text("object id", &user.object_id, MAX_OBJECT_ID_LEN)?;
    let names = [
        ("displayName", &user.display_name),
        ("givenName", &user.given_name),
        ("surname", &user.surname),
        ("jobTitle", &user.job_title),
        ("userType", &user.user_type),
        ("creationType", &user.creation_type),
    ];
    for (field, value) in names {
        if let Some(value) = value {
            check_text(field, value, MAX_NAME_LEN)?;
        }
    }
    if let Some(mobile) = &user.mobile_phone {
        check_text("mobilePhone", mobile, MAX_PHONE_LEN)?;
    }
    if user.business_phones.len() > MAX_LIST_LEN {
        return Err("businessPhones has too many entries".to_string());
    }
    for phone in &user.business_phones {
        check_text("businessPhones", phone, MAX_PHONE_LEN)?;
    }
    if let Some(upn) = &user.user_principal_name {
        check_text("userPrincipalName", upn.trim(), MAX_EMAIL_LEN)?;
    }
    if let Some(mail) = &user.mail {
        check_text("mail", mail.trim(), MAX_EMAIL_LEN)?;
        // Graph only stores valid SMTP addresses in `mail`, so an unparseable one means the
        // record was damaged on the way; it is not merely a user without an address.
        if !mail.trim().is_empty() && normalize_email(mail).is_none() {
            return Err("mail is not a valid email address".to_string());
        }
    }
    for (field, list) in [
        ("otherMails", &user.other_mails),
        ("proxyAddresses", &user.proxy_addresses),
    ] {
        if list.len() > MAX_LIST_LEN {
            return Err(format!("{field} has too many entries"));
        }
        for entry in list {
            check_text(field, entry, MAX_ADDRESS_ENTRY_LEN)?;
        }
    }
    Ok(())
}
