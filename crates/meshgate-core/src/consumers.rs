//! Consumers: the callers the config declares, with their groups and credentials. Authentication
//! plugins turn a request's credential into one of these; authorization plugins judge its groups.

use http::HeaderValue;
use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A caller, once an authentication plugin has said who it is. Header values for the upstream
/// are built once here, not per request.
#[derive(Debug)]
pub struct Consumer {
    /// The consumer's unique name.
    pub username: Arc<str>,
    /// An identifier from another system (a user id), if the config gives one.
    pub custom_id: Option<Arc<str>>,
    /// Groups used by authorization plugins.
    pub groups: Box<[Arc<str>]>,
    /// `X-Consumer-Username`, `X-Consumer-Custom-ID` and `X-Consumer-Groups` as sent upstream.
    pub(crate) headers: IdentityHeaders,
}

#[derive(Debug)]
pub(crate) struct IdentityHeaders {
    pub(crate) username: Option<HeaderValue>,
    pub(crate) custom_id: Option<HeaderValue>,
    pub(crate) groups: Option<HeaderValue>,
}

impl Consumer {
    /// A consumer with precomputed header values. Values that cannot be header values (control
    /// characters) are not sent rather than sent mangled.
    pub fn new(username: &str, custom_id: Option<&str>, groups: Vec<Arc<str>>) -> Consumer {
        let joined = groups.iter().map(|g| &**g).collect::<Vec<_>>().join(", ");
        Consumer {
            username: username.into(),
            custom_id: custom_id.map(Into::into),
            headers: IdentityHeaders {
                username: HeaderValue::from_str(username).ok(),
                custom_id: custom_id.and_then(|c| HeaderValue::from_str(c).ok()),
                groups: (!groups.is_empty()).then(|| HeaderValue::from_str(&joined).ok()).flatten(),
            },
            groups: groups.into(),
        }
    }

    /// Whether the consumer is in `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| &**g == group)
    }
}

/// One consumer's credentials of one kind, as written in the config, with where they are.
#[derive(Clone, Debug)]
pub struct CredentialEntry {
    /// Path of this entry in the config document, e.g. `consumers[2].credentials.key-auth[0]`.
    pub field: String,
    /// The entry's settings, for the owning plugin to parse.
    pub value: serde_json::Value,
}

/// The declared consumers, with lookup by name and per-plugin credential indexes.
#[derive(Default)]
pub struct Consumers {
    list: Vec<Arc<Consumer>>,
    by_name: HashMap<Arc<str>, usize>,
    /// `kind → [(consumer index, entry)]`, e.g. `key-auth → …`.
    credentials: BTreeMap<String, Vec<(usize, CredentialEntry)>>,
    /// Indexes built from credentials by the plugins, once per config however many routes use
    /// them; keyed by the index's type.
    shared: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// Directory of the config file, for secrets and files given by relative path.
    pub base_dir: PathBuf,
}

impl Consumers {
    /// No consumers yet; relative secret and file paths will be read from `base_dir`.
    pub fn new(base_dir: PathBuf) -> Consumers {
        Consumers { base_dir, ..Consumers::default() }
    }

    /// Adds a consumer with its credentials by kind. `field` locates it (`consumers[3]`).
    /// Fails when the name (or custom id) is already taken.
    pub fn add(
        &mut self,
        consumer: Consumer,
        credentials: impl IntoIterator<Item = (String, CredentialEntry)>,
    ) -> Result<(), String> {
        let index = self.list.len();
        for name in std::iter::once(&consumer.username).chain(consumer.custom_id.as_ref()) {
            if self.by_name.contains_key(name) {
                return Err(format!("{name:?} is already the username or custom_id of another consumer"));
            }
        }
        self.by_name.insert(consumer.username.clone(), index);
        if let Some(c) = &consumer.custom_id {
            self.by_name.insert(c.clone(), index);
        }
        for (kind, entry) in credentials {
            self.credentials.entry(kind).or_default().push((index, entry));
        }
        self.list.push(Arc::new(consumer));
        Ok(())
    }

    /// The consumer whose username or custom id is `name` (for identities taken from a token's
    /// claim or a certificate's subject).
    pub fn find(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// Every consumer's credentials of `kind`, with the consumer they belong to.
    pub fn credentials(&self, kind: &str) -> impl Iterator<Item = (&Arc<Consumer>, &CredentialEntry)> {
        self.credentials.get(kind).into_iter().flatten().map(|(i, e)| (&self.list[*i], e))
    }

    /// The credential kinds that appear in the config.
    pub fn credential_kinds(&self) -> impl Iterator<Item = &str> {
        self.credentials.keys().map(String::as_str)
    }

    /// An index derived from the consumers, built on first use and shared by every plugin
    /// instance of this config (one key table for a thousand routes with key-auth).
    pub fn shared<T, E>(&self, build: impl FnOnce(&Consumers) -> Result<T, E>) -> Result<Arc<T>, E>
    where
        T: Any + Send + Sync,
    {
        let id = TypeId::of::<T>();
        if let Some(found) = self.shared.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
            return Ok(found.clone().downcast::<T>().unwrap_or_else(|_| unreachable!("keyed by type")));
        }
        // Built outside the lock: building may look up other shared indexes.
        let built = Arc::new(build(self)?);
        self.shared.lock().unwrap_or_else(|e| e.into_inner()).insert(id, built.clone());
        Ok(built)
    }

    /// How many consumers there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no consumer is declared.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
