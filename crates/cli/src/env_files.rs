//! Secrets from files for the variables no secret provider covers (`DATABASE_URL`, the
//! platform master key, the encryption key, a Vault token): `NAME_FILE=/path` sets `NAME` to
//! the file's contents (trailing newline removed), as Docker and Kubernetes secrets are
//! mounted. Read once at start, like the variables themselves; an explicit `NAME` wins.

use anyhow::{Context, Result};

/// Which `NAME_FILE` variables are honoured: entra-sync's own and the contract names that
/// hold secrets. Other `*_FILE` variables (`AZURE_FEDERATED_TOKEN_FILE`, …) keep their meaning.
fn honoured(name: &str) -> bool {
    name == "DATABASE_URL"
        || name == "VAULT_TOKEN"
        || name.starts_with("ENTRA_SYNC_")
        || name.starts_with("MICROSOFT_CLIENT_")
}

/// `environment` with each honoured `NAME_FILE` replaced by `NAME` and the file's contents,
/// unless `NAME` is already set to a non-empty value. A file that cannot be read is an error
/// naming the variable and the path, never the contents.
pub fn resolve(environment: Vec<(String, String)>) -> Result<Vec<(String, String)>> {
    let mut resolved = Vec::with_capacity(environment.len());
    let mut from_files = Vec::new();
    for (name, value) in environment {
        match name.strip_suffix("_FILE") {
            Some(base) if honoured(base) && !value.is_empty() => {
                from_files.push((base.to_owned(), name, value));
            }
            _ => resolved.push((name, value)),
        }
    }
    for (base, name, path) in from_files {
        let already_set = resolved
            .iter()
            .any(|(existing, value)| *existing == base && !value.is_empty());
        if already_set {
            continue;
        }
        let contents =
            std::fs::read_to_string(&path).with_context(|| format!("reading {name} ({path})"))?;
        let contents = contents.trim_end_matches(['\n', '\r']).to_owned();
        resolved.retain(|(existing, _)| *existing != base);
        resolved.push((base, contents));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    fn get<'a>(environment: &'a [(String, String)], name: &str) -> Option<&'a str> {
        environment
            .iter()
            .find(|(existing, _)| existing == name)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn file_variables_become_their_contents_and_explicit_values_win() {
        let dir = std::env::temp_dir().join(format!("entra-sync-env-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("ENTRA_SYNC_MASTER_KEY");
        std::fs::write(&key, "master-from-file\n").expect("write");
        let url = dir.join("DATABASE_URL");
        std::fs::write(&url, "postgres://file").expect("write");
        let environment = resolve(pairs(&[
            ("ENTRA_SYNC_MASTER_KEY_FILE", key.to_str().expect("path")),
            ("DATABASE_URL", "postgres://explicit"),
            ("DATABASE_URL_FILE", url.to_str().expect("path")),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ]))
        .expect("resolve");
        assert_eq!(
            get(&environment, "ENTRA_SYNC_MASTER_KEY"),
            Some("master-from-file")
        );
        assert_eq!(
            get(&environment, "DATABASE_URL"),
            Some("postgres://explicit")
        );
        // Not a secret-bearing name: passed through untouched, not read.
        assert_eq!(
            get(&environment, "AZURE_FEDERATED_TOKEN_FILE"),
            Some("/var/run/token")
        );
        assert_eq!(get(&environment, "AZURE_FEDERATED_TOKEN"), None);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_names_the_variable() {
        let error = resolve(pairs(&[(
            "ENTRA_SYNC_ENCRYPTION_KEY_FILE",
            "/nonexistent/entra-sync/key",
        )]))
        .expect_err("missing file");
        let message = format!("{error:#}");
        assert!(
            message.contains("ENTRA_SYNC_ENCRYPTION_KEY_FILE"),
            "{message}"
        );
    }
}
