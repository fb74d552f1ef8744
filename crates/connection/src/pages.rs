//! The one page loop over a managed tenant's users, shared by the sync activity and the API's
//! preflight: where to start (a stored delta link, a resume cursor, or from scratch), how to
//! go on (the previous page's cursor), what to do when a delta link is refused (start again
//! as a full enumeration, MICROSOFT.md §3), and whether what was read is a *complete*
//! enumeration — the only kind after which absent users may be inactivated (SPEC §5.4).

use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::source::{DirectorySource, UsersCursor, UsersPage};

/// One page read by [`PageLoop::next_page`].
#[derive(Debug)]
pub struct FetchedPage {
    pub page: UsersPage,
    /// True when the stored delta link was refused and this page starts a full enumeration
    /// instead: the caller forgets the delta link and records the mode change.
    pub restarted_full: bool,
}

/// The enumeration of one managed tenant's users, page by page.
#[derive(Clone, Debug)]
pub struct PageLoop {
    entra_tenant_id: String,
    prefer_delta: bool,
    delta_link: Option<String>,
    next_cursor: Option<String>,
    done: bool,
}

impl PageLoop {
    /// Starts (or resumes) the enumeration of `entra_tenant_id`.
    ///
    /// `prefer_delta` reads `users/delta` (direct connections; CIPP has no delta, §5a). With a
    /// `delta_link` only changes are read; without one the round lists every user, which is a
    /// full enumeration. `resume_from` is the cursor a previous attempt saved.
    pub fn new(
        entra_tenant_id: impl Into<String>,
        prefer_delta: bool,
        delta_link: Option<String>,
        resume_from: Option<String>,
    ) -> Self {
        PageLoop {
            entra_tenant_id: entra_tenant_id.into(),
            prefer_delta,
            delta_link: if prefer_delta { delta_link } else { None },
            next_cursor: resume_from,
            done: false,
        }
    }

    /// True when this enumeration lists every user (no delta link), so that a finished one
    /// is complete and absent users can be told apart.
    pub fn is_full(&self) -> bool {
        self.delta_link.is_none()
    }

    /// True once the last page was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when every user was read by a full enumeration.
    pub fn is_complete_enumeration(&self) -> bool {
        self.done && self.is_full()
    }

    /// The cursor of the next page, to save for a resume.
    pub fn next_cursor(&self) -> Option<&str> {
        self.next_cursor.as_deref()
    }

    /// Reads the next page. A refused delta link restarts the round from scratch once (a full
    /// enumeration), reported by `restarted_full`. Errors are the source's, classified.
    pub async fn next_page(
        &mut self,
        source: &dyn DirectorySource,
    ) -> Result<FetchedPage, DirectoryError> {
        if self.done {
            return Err(DirectoryError::Invalid {
                message: "the enumeration already ended".to_owned(),
            });
        }
        let mut restarted_full = false;
        loop {
            let cursor = match &self.next_cursor {
                Some(next) => UsersCursor::Next(next.clone()),
                None => UsersCursor::Start {
                    prefer_delta: self.prefer_delta,
                    delta_link: self.delta_link.clone(),
                },
            };
            match source.users_page(&self.entra_tenant_id, cursor).await {
                Ok(page) => {
                    self.next_cursor = page.next_cursor.clone();
                    self.done = page.is_last();
                    return Ok(FetchedPage {
                        page,
                        restarted_full,
                    });
                }
                Err(DirectoryError::DeltaExpired { code }) if !restarted_full => {
                    // MICROSOFT.md §3: an expired or invalid delta token means a full resync.
                    tracing::warn!(%code, "delta link no longer accepted; starting a full enumeration");
                    self.delta_link = None;
                    self.next_cursor = None;
                    restarted_full = true;
                }
                Err(DirectoryError::DeltaExpired { code }) => {
                    // A fresh round cannot expire; a provider that says so is misbehaving.
                    return Err(DirectoryError::Transient {
                        code,
                        message: "a new enumeration was refused as expired".to_owned(),
                        retry_after: None,
                    });
                }
                Err(error) => return Err(error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use entra_sync_directory::source::DiscoveredTenant;

    use super::*;

    /// Answers from a script and records the cursors it was asked for.
    struct Scripted {
        answers: Mutex<Vec<Result<UsersPage, DirectoryError>>>,
        asked: Mutex<Vec<UsersCursor>>,
    }

    #[async_trait]
    impl DirectorySource for Scripted {
        async fn list_tenants(&self) -> Result<Vec<DiscoveredTenant>, DirectoryError> {
            Ok(Vec::new())
        }
        async fn users_page(
            &self,
            _tenant: &str,
            cursor: UsersCursor,
        ) -> Result<UsersPage, DirectoryError> {
            self.asked.lock().expect("lock").push(cursor);
            self.answers.lock().expect("lock").remove(0)
        }
    }

    fn page(next: Option<&str>, delta: Option<&str>) -> UsersPage {
        UsersPage {
            entries: Vec::new(),
            next_cursor: next.map(str::to_owned),
            delta_link: delta.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn an_expired_delta_link_restarts_as_a_full_enumeration() {
        let source = Scripted {
            answers: Mutex::new(vec![
                Err(DirectoryError::DeltaExpired {
                    code: "syncStateNotFound".into(),
                }),
                Ok(page(Some("n1"), None)),
                Ok(page(None, Some("d2"))),
            ]),
            asked: Mutex::new(Vec::new()),
        };
        let mut pages = PageLoop::new("t", true, Some("d1".into()), None);
        assert!(!pages.is_full());
        let first = pages.next_page(&source).await.expect("page");
        assert!(first.restarted_full);
        assert!(pages.is_full() && !pages.is_done());
        let second = pages.next_page(&source).await.expect("page");
        assert!(!second.restarted_full);
        assert!(pages.is_complete_enumeration());
        assert_eq!(second.page.delta_link.as_deref(), Some("d2"));
        let asked = source.asked.lock().expect("lock").clone();
        assert_eq!(
            asked,
            vec![
                UsersCursor::Start {
                    prefer_delta: true,
                    delta_link: Some("d1".into())
                },
                UsersCursor::Start {
                    prefer_delta: true,
                    delta_link: None
                },
                UsersCursor::Next("n1".into()),
            ]
        );
        assert!(pages.next_page(&source).await.is_err());
    }

    #[tokio::test]
    async fn a_delta_round_is_not_a_complete_enumeration_and_errors_pass_through() {
        let source = Scripted {
            answers: Mutex::new(vec![
                Ok(page(None, Some("d2"))),
                Err(DirectoryError::Transient {
                    code: "http_503".into(),
                    message: "down".into(),
                    retry_after: None,
                }),
            ]),
            asked: Mutex::new(Vec::new()),
        };
        let mut pages = PageLoop::new("t", true, Some("d1".into()), None);
        pages.next_page(&source).await.expect("page");
        assert!(pages.is_done() && !pages.is_complete_enumeration());
        let mut resumed = PageLoop::new("t", false, Some("ignored".into()), Some("n5".into()));
        assert!(resumed.is_full());
        let error = resumed.next_page(&source).await.expect_err("error");
        assert_eq!(error.class(), "transient");
        assert_eq!(
            source.asked.lock().expect("lock").last(),
            Some(&UsersCursor::Next("n5".into()))
        );
    }
}
