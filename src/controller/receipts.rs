//! Receipts: the operator's record, kept in its own namespace, that a signal was delivered.
//!
//! A receipt is keyed by the signal's namespace, kind, name and a hash of what it sends, so a
//! signal deleted and created again with the same manifest finds the receipt of the first one
//! and is not sent twice. The "book" is one receipt-shaped object created once: every delivery
//! since its creation has a receipt (until the receipt expires), so only targets older than
//! the book, or than the retention, need the AWS side checked instead (a rebuilt cluster).
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::api::{SignalReceipt, SignalReceiptSpec};

/// Name of the book: its creation time is when receipts started being kept.
pub const BOOK_NAME: &str = "signalman-receipts-since";
/// How long the book's creation time is trusted before it is read again.
const BOOK_REREAD: Duration = Duration::from_secs(60);

/// Kind recorded in the book's spec, so nobody takes it for a receipt of a signal.
const BOOK_KIND: &str = "ReceiptBook";

/// Which signal a receipt is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptKey {
    pub namespace: String,
    pub kind: &'static str,
    pub name: String,
    /// SHA-256 (hex) of what the signal sends.
    pub hash: String,
}

impl ReceiptKey {
    /// `identity` is what the signal sends (target, signal, input or payload), as JSON.
    pub fn new(
        namespace: &str,
        kind: &'static str,
        name: &str,
        identity: &serde_json::Value,
    ) -> Self {
        let hash = hex(&Sha256::digest(identity.to_string().as_bytes()));
        Self {
            namespace: namespace.to_string(),
            kind,
            name: name.to_string(),
            hash,
        }
    }

    /// A short reference to this very signal (12 hex digits of the key's hash): the same for
    /// an object created again with the same manifest, different for any other signal. The
    /// operator leaves it in AWS where it can (the Comment of an approval decision).
    pub fn reference(&self) -> String {
        self.object_name()[2..14].to_string()
    }

    /// The receipt's object name: a hash of the whole key (namespace and name may together be
    /// longer than an object name may be).
    pub fn object_name(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.namespace.as_str(),
            self.kind,
            self.name.as_str(),
            self.hash.as_str(),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        format!("r-{}", &hex(&h.finalize())[..40])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receipts of one operator installation.
pub struct Receipts {
    api: Api<SignalReceipt>,
    retention: Duration,
    /// Creation time of the book, and when it was last read: read again after
    /// [`BOOK_REREAD`], so receipts deleted while the operator runs (the book with them) move
    /// the horizon too.
    book_created: tokio::sync::Mutex<Option<(Timestamp, std::time::Instant)>>,
}

impl Receipts {
    pub fn new(client: kube::Client, namespace: &str, retention: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            retention,
            book_created: tokio::sync::Mutex::new(None),
        }
    }

    /// The receipt of `key`, if one is kept and not expired.
    pub async fn find(
        &self,
        key: &ReceiptKey,
        now: Timestamp,
    ) -> Result<Option<SignalReceipt>, kube::Error> {
        let found = self.api.get_opt(&key.object_name()).await?;
        Ok(found.filter(|r| {
            r.spec.signal_hash == key.hash
                && r.spec.signal_namespace == key.namespace
                && r.spec.signal_name == key.name
                && r.spec.expires_at.0 > now
        }))
    }

    /// Records, before anything is sent, that the object `uid` is about to attempt `key`
    /// towards `target`: should the object be deleted while the attempt's outcome is unknown,
    /// the same signal created again verifies from `now` before it sends. A receipt already
    /// there is kept (it holds the earliest attempt).
    pub async fn record_attempt(
        &self,
        key: &ReceiptKey,
        uid: Option<&str>,
        target: Option<String>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let mut receipt = self.receipt(key, uid, target, Some(now), None, now);
        match self.api.create(&PostParams::default(), &receipt).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(ae)) if ae.code == 409 => {
                // An expired receipt not yet swept says nothing any more: this attempt takes
                // its place (conditional on what was read), so its record lives its full term.
                let Some(old) = self.api.get_opt(&key.object_name()).await? else {
                    return Ok(());
                };
                if old.spec.expires_at.0 > now {
                    return Ok(());
                }
                receipt.metadata.resource_version = old.metadata.resource_version;
                match self
                    .api
                    .replace(&key.object_name(), &PostParams::default(), &receipt)
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(ae)) if ae.code == 409 || ae.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Records the delivery of `key` to `target`: marks the attempt's receipt delivered, or
    /// creates the receipt when there is none.
    pub async fn record_delivery(
        &self,
        key: &ReceiptKey,
        uid: Option<&str>,
        target: Option<String>,
        now: Timestamp,
    ) -> Result<(), kube::Error> {
        let name = key.object_name();
        // The delivery's receipt lives its full term from now (a receipt that expired before
        // it was swept is renewed, not left to protect nothing).
        let mut spec = serde_json::json!({
            "deliveredAt": Time(now),
            "expiresAt": Time(add(now, self.retention)),
        });
        if let Some(target) = &target {
            spec["target"] = serde_json::json!(target);
        }
        let mark = serde_json::json!({ "spec": spec });
        match self
            .api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&mark))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(ae)) if ae.code == 404 => {
                let receipt = self.receipt(key, uid, target, None, Some(now), now);
                match self.api.create(&PostParams::default(), &receipt).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(ae)) if ae.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn receipt(
        &self,
        key: &ReceiptKey,
        uid: Option<&str>,
        target: Option<String>,
        attempted_at: Option<Timestamp>,
        delivered_at: Option<Timestamp>,
        now: Timestamp,
    ) -> SignalReceipt {
        SignalReceipt {
            metadata: ObjectMeta {
                name: Some(key.object_name()),
                labels: Some(
                    [
                        (
                            "signalman.dev/signal-namespace".to_string(),
                            key.namespace.clone(),
                        ),
                        (
                            "signalman.dev/signal-kind".to_string(),
                            key.kind.to_string(),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: SignalReceiptSpec {
                signal_namespace: key.namespace.clone(),
                signal_kind: key.kind.to_string(),
                signal_name: key.name.clone(),
                signal_hash: key.hash.clone(),
                signal_uid: uid.map(str::to_string),
                target,
                attempted_at: attempted_at.map(Time),
                delivered_at: delivered_at.map(Time),
                expires_at: Time(add(now, self.retention)),
            },
        }
    }

    /// Deliveries before this instant may have left no receipt (made before receipts were
    /// kept here, or whose receipt expired): the later of the book's creation and `now` less
    /// the retention. Creates the book on first use.
    pub async fn horizon(&self, now: Timestamp) -> Result<Timestamp, kube::Error> {
        let mut cached = self.book_created.lock().await;
        if let Some((created, read)) = *cached {
            if read.elapsed() < BOOK_REREAD {
                return Ok(created.max(now - self.retention));
            }
        }
        let created = async {
            let book = match self.api.get_opt(BOOK_NAME).await? {
                Some(book) => book,
                None => {
                    let book = SignalReceipt {
                        metadata: ObjectMeta {
                            name: Some(BOOK_NAME.to_string()),
                            ..Default::default()
                        },
                        spec: SignalReceiptSpec {
                            signal_namespace: String::new(),
                            signal_kind: BOOK_KIND.to_string(),
                            signal_name: String::new(),
                            signal_hash: String::new(),
                            target: None,
                            signal_uid: None,
                            attempted_at: None,
                            delivered_at: Some(Time(now)),
                            expires_at: Time(Timestamp::MAX),
                        },
                    };
                    match self.api.create(&PostParams::default(), &book).await {
                        Ok(b) => {
                            info!("receipts are kept from now on");
                            b
                        }
                        Err(kube::Error::Api(ae)) if ae.code == 409 => {
                            self.api.get(BOOK_NAME).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            Ok::<_, kube::Error>(book.metadata.creation_timestamp.map(|t| t.0).unwrap_or(now))
        }
        .await?;
        *cached = Some((created, std::time::Instant::now()));
        Ok(created.max(now - self.retention))
    }

    /// Deletes expired receipts (never the book). Returns how many.
    pub async fn sweep(&self, now: Timestamp) -> Result<usize, kube::Error> {
        let mut deleted = 0;
        let mut params = ListParams::default().limit(500);
        loop {
            let page = self.api.list(&params).await?;
            for r in &page.items {
                let name = r.metadata.name.clone().unwrap_or_default();
                if name == BOOK_NAME || r.spec.expires_at.0 > now {
                    continue;
                }
                match self.api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => deleted += 1,
                    Err(kube::Error::Api(ae)) if ae.code == 404 => {}
                    Err(e) => warn!(error = %e, "expired receipt not deleted"),
                }
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        debug!(deleted, "receipts swept");
        Ok(deleted)
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    let d = k8s_openapi::jiff::SignedDuration::try_from(d)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_every_part_and_names_are_valid() {
        let id = serde_json::json!({"signalName": "approve", "input": "x"});
        let k = ReceiptKey::new("team-a", "WorkflowSignal", "approve-1", &id);
        assert_eq!(
            k,
            ReceiptKey::new("team-a", "WorkflowSignal", "approve-1", &id)
        );
        let name = k.object_name();
        assert_eq!(name.len(), 42);
        assert!(name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        for other in [
            ReceiptKey::new("team-b", "WorkflowSignal", "approve-1", &id),
            ReceiptKey::new("team-a", "AutomationSignal", "approve-1", &id),
            ReceiptKey::new("team-a", "WorkflowSignal", "approve-2", &id),
            ReceiptKey::new(
                "team-a",
                "WorkflowSignal",
                "approve-1",
                &serde_json::json!({"signalName": "approve", "input": "y"}),
            ),
        ] {
            assert_ne!(other.object_name(), name);
        }
        // The hash never carries the input in clear.
        assert!(!k.hash.contains("approve"));
    }
}
