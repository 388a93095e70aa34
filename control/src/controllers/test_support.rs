//! What the controllers' store-level tests share.

use crate::store::{MemStore, Op, Revision, Store, StoreError, Versioned, Watch};

/// A store where another writer changes every object just before each
/// `update`, so every compare-and-swap update loses.
pub(super) struct RacingStore<'a>(pub(super) &'a MemStore);

impl Store for RacingStore<'_> {
    fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.0.get(key)
    }
    fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, Revision), StoreError> {
        self.0.list(prefix)
    }
    fn update(&self, key: &str, value: &[u8], expected: Option<Revision>) -> Result<Revision, StoreError> {
        let current = self.0.get(key)?.ok_or_else(|| StoreError::NotFound { key: key.to_owned() })?;
        self.0.update(key, &current.value, None)?;
        self.0.update(key, value, expected)
    }
    fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(Revision, Versioned), StoreError> {
        self.0.delete(key, expected)
    }
    fn txn(&self, ops: &[Op]) -> Result<Revision, StoreError> {
        self.0.txn(ops)
    }
    fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.0.watch(prefix, from)
    }
    fn current_revision(&self) -> Result<Revision, StoreError> {
        self.0.current_revision()
    }
    fn compact(&self, keep_after: Revision) -> Result<(), StoreError> {
        self.0.compact(keep_after)
    }
}
