//! A folder of secret files, one file per key (a mounted Kubernetes secret, a Docker
//! secret): `{root}/{KEY}` for the application and `{root}/tenants/{tenant id}/{KEY}` for one
//! PSA tenant. Each read checks the file's metadata and reads it again when it changed, so a
//! rotated secret is used without a restart. Kubernetes replaces the files by swapping a
//! symlink, which changes the inode; an in-place rewrite changes the modification time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use secrecy::SecretString;

use crate::{SecretProvider, SecretScope, SecretsError};

#[derive(Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    length: u64,
    inode: u64,
}

/// Secrets read from files under one directory.
pub struct FolderProvider {
    root: PathBuf,
    cache: Mutex<HashMap<PathBuf, (FileStamp, SecretString)>>,
}

impl std::fmt::Debug for FolderProvider {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FolderProvider")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl FolderProvider {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FolderProvider {
            root: root.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn path(&self, scope: SecretScope, key: &str) -> Option<PathBuf> {
        // Keys are fixed names; refuse anything that could leave the directory.
        if key.is_empty() || key.contains(['/', '\\']) || key.starts_with('.') {
            return None;
        }
        Some(match scope {
            SecretScope::Application => self.root.join(key),
            SecretScope::Tenant(tenant_id) => self
                .root
                .join("tenants")
                .join(tenant_id.to_string())
                .join(key),
        })
    }

    fn stamp(metadata: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        FileStamp {
            modified: metadata.modified().ok(),
            length: metadata.len(),
            inode,
        }
    }

    fn read(&self, path: &Path) -> Result<Option<SecretString>, SecretsError> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                self.forget(path);
                return Ok(None);
            }
            Err(error) => return Err(unreadable(path, &error)),
        };
        let stamp = Self::stamp(&metadata);
        if let Ok(cache) = self.cache.lock() {
            if let Some((cached_stamp, value)) = cache.get(path) {
                if *cached_stamp == stamp {
                    return Ok(Some(value.clone()));
                }
            }
        }
        let text = std::fs::read_to_string(path).map_err(|error| unreadable(path, &error))?;
        // Files written by editors and `echo` end in a newline that is not part of the secret.
        let value = text.trim_end_matches(['\n', '\r']).to_owned();
        if value.is_empty() {
            self.forget(path);
            return Ok(None);
        }
        let value = SecretString::from(value);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(path.to_owned(), (stamp, value.clone()));
        }
        tracing::debug!(path = %path.display(), "secret file read");
        Ok(Some(value))
    }

    fn forget(&self, path: &Path) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(path);
        }
    }
}

fn unreadable(path: &Path, error: &std::io::Error) -> SecretsError {
    SecretsError::Config {
        provider: "folder",
        message: format!("cannot read {}: {}", path.display(), error.kind()),
        setting: "ENTRA_SYNC__SECRETS__DIRECTORY".to_owned(),
    }
}

#[async_trait]
impl SecretProvider for FolderProvider {
    fn name(&self) -> &'static str {
        "folder"
    }

    async fn get(
        &self,
        scope: SecretScope,
        key: &str,
    ) -> Result<Option<SecretString>, SecretsError> {
        match self.path(scope, key) {
            Some(path) => self.read(&path),
            None => Ok(None),
        }
    }
}
