//! Graph user objects (as Graph and CIPP send them, MICROSOFT.md §3 and §5a) read one at a
//! time into domain entries, so one malformed user never spoils its page (SPEC §5.6).

use entra_sync_domain::model::{DirectoryEntry, DirectoryUser};
use serde_json::{Map, Value};

/// The `$select` list of MICROSOFT.md §3: what the sync needs, and nothing it does not.
pub const USER_SELECT: &str = "id,displayName,givenName,surname,mail,userPrincipalName,otherMails,proxyAddresses,accountEnabled,userType,jobTitle,mobilePhone,businessPhones,assignedLicenses,creationType";

/// Reads one element of a users `value` array.
pub(crate) fn parse_entry(value: &Value) -> DirectoryEntry {
    let Some(object) = value.as_object() else {
        return DirectoryEntry::Invalid {
            object_id: None,
            reason: "the user is not a JSON object".to_owned(),
        };
    };
    let object_id = match object.get("id") {
        Some(Value::String(id)) if !id.trim().is_empty() => id.clone(),
        _ => {
            return DirectoryEntry::Invalid {
                object_id: None,
                reason: "the user has no id".to_owned(),
            }
        }
    };
    if let Some(removed) = object.get("@removed") {
        // §3: `reason` is `changed` (soft-deleted, restorable) or `deleted` (permanent).
        let permanent = removed.get("reason").and_then(Value::as_str) == Some("deleted");
        return DirectoryEntry::Removed {
            object_id,
            permanent,
        };
    }
    match parse_user(object, object_id.clone()) {
        Ok(user) => DirectoryEntry::Present(user),
        Err(reason) => DirectoryEntry::Invalid {
            object_id: Some(object_id),
            reason,
        },
    }
}

fn parse_user(object: &Map<String, Value>, object_id: String) -> Result<DirectoryUser, String> {
    Ok(DirectoryUser {
        object_id,
        display_name: string(object, "displayName")?,
        given_name: string(object, "givenName")?,
        surname: string(object, "surname")?,
        mail: string(object, "mail")?,
        user_principal_name: string(object, "userPrincipalName")?,
        other_mails: strings(object, "otherMails")?,
        proxy_addresses: proxy_addresses(object)?,
        account_enabled: boolean(object, "accountEnabled")?,
        user_type: string(object, "userType")?,
        creation_type: string(object, "creationType")?,
        job_title: string(object, "jobTitle")?,
        mobile_phone: string(object, "mobilePhone")?,
        business_phones: strings(object, "businessPhones")?,
        assigned_license_count: match object.get("assignedLicenses") {
            None | Some(Value::Null) => 0,
            Some(Value::Array(licenses)) => licenses.len(),
            Some(_) => return Err("assignedLicenses is not an array".to_owned()),
        },
        // Group membership is not part of a users page; the sync sets it when filters need it.
        group_ids: None,
    })
}

fn string(object: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("{field} is not a string")),
    }
}

fn boolean(object: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(flag)) => Ok(Some(*flag)),
        Some(_) => Err(format!("{field} is not a boolean")),
    }
}

fn strings(object: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .filter(|item| !item.is_null())
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{field} holds a non-string"))
            })
            .collect(),
        Some(_) => Err(format!("{field} is not an array")),
    }
}

/// `proxyAddresses`, or for CIPP's `ListUsers` answer (§5a) its `Aliases` text: the proxy
/// addresses joined by ", ". Aliases without a `type:` prefix are secondary SMTP addresses.
fn proxy_addresses(object: &Map<String, Value>) -> Result<Vec<String>, String> {
    let proxy_addresses = strings(object, "proxyAddresses")?;
    if !proxy_addresses.is_empty() {
        return Ok(proxy_addresses);
    }
    match object.get("Aliases") {
        Some(Value::String(aliases)) => Ok(aliases
            .split(',')
            .map(str::trim)
            .filter(|alias| !alias.is_empty())
            .map(|alias| {
                if alias.contains(':') {
                    alias.to_owned()
                } else {
                    format!("smtp:{alias}")
                }
            })
            .collect()),
        _ => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_user_is_read() {
        let entry = parse_entry(&json!({
            "id": "u1", "displayName": "Bob", "givenName": "Bob", "surname": "Smith", "mail": null,
            "userPrincipalName": "bob@contoso.com", "otherMails": ["b@x.com"],
            "proxyAddresses": ["SMTP:bob@contoso.com", "smtp:bob@sales.contoso.com"],
            "accountEnabled": false, "userType": "Member", "jobTitle": "CFO", "mobilePhone": "+1 555",
            "businessPhones": ["+1 556"], "assignedLicenses": [{"skuId": "a"}, {"skuId": "b"}],
            "creationType": null
        }));
        let DirectoryEntry::Present(user) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!(user.object_id, "u1");
        assert_eq!(user.mail, None);
        assert_eq!(user.proxy_addresses.len(), 2);
        assert_eq!(user.account_enabled, Some(false));
        assert_eq!(user.assigned_license_count, 2);
        assert_eq!(user.business_phones, vec!["+1 556".to_owned()]);
    }

    #[test]
    fn removed_entries_tell_soft_from_permanent() {
        assert_eq!(
            parse_entry(&json!({"id": "u1", "@removed": {"reason": "changed"}})),
            DirectoryEntry::Removed {
                object_id: "u1".to_owned(),
                permanent: false
            }
        );
        assert_eq!(
            parse_entry(&json!({"id": "u2", "@removed": {"reason": "deleted"}})),
            DirectoryEntry::Removed {
                object_id: "u2".to_owned(),
                permanent: true
            }
        );
    }

    #[test]
    fn malformed_users_become_invalid_entries() {
        assert_eq!(
            parse_entry(&json!({"id": "u1", "mail": 42})),
            DirectoryEntry::Invalid {
                object_id: Some("u1".to_owned()),
                reason: "mail is not a string".to_owned()
            }
        );
        assert!(matches!(
            parse_entry(&json!({"mail": "a@b.c"})),
            DirectoryEntry::Invalid {
                object_id: None,
                ..
            }
        ));
        assert!(matches!(
            parse_entry(&json!("text")),
            DirectoryEntry::Invalid {
                object_id: None,
                ..
            }
        ));
        assert!(matches!(
            parse_entry(&json!({"id": "u3", "proxyAddresses": "SMTP:a@b.c"})),
            DirectoryEntry::Invalid { .. }
        ));
    }

    #[test]
    fn cipp_aliases_stand_in_for_proxy_addresses() {
        let DirectoryEntry::Present(user) =
            parse_entry(&json!({"id": "u1", "Aliases": "SMTP:a@contoso.com, b@contoso.com"}))
        else {
            panic!("not present")
        };
        assert_eq!(
            user.proxy_addresses,
            vec![
                "SMTP:a@contoso.com".to_owned(),
                "smtp:b@contoso.com".to_owned()
            ]
        );
    }
}
