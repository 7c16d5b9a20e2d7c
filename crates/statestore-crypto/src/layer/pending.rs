//! Progress of keyed writes still to be made (`Store::put_pending`): sealed
//! whole, bound to the session and the write's key.

use statestore_core::{IdempotencyKey, Pending, Result as StoreResult, SessionId};

use super::Layer;

impl Layer {
    pub(crate) async fn put_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
        pending: &Pending,
    ) -> StoreResult<()> {
        let keys = self.keys();
        let sealed =
            self.codec(keys.as_ref())
                .seal_pending(self.scope(id, None), key.as_str(), pending)?;
        self.inner.put_pending(id, key, &sealed).await
    }

    pub(crate) async fn load_pending(
        &self,
        id: &SessionId,
        key: &IdempotencyKey,
    ) -> StoreResult<Option<Pending>> {
        let Some(stored) = self.inner.load_pending(id, key).await? else {
            return Ok(None);
        };
        let keys = self.keys();
        let codec = self.codec(keys.as_ref());
        codec
            .open_pending(self.scope(id, None), key.as_str(), &stored)
            .map(Some)
            .map_err(|e| self.err(e))
    }
}
