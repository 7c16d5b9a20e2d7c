//! The list indexes: every session by id and by last write (`updated_at`),
//! for all sessions and per user, so that a page of
//! [`Store::list`](statestore_core::Store::list) costs O(log n + page).
//!
//! Invariant: a session is indexed, under its current owner and
//! `updated_at`, exactly while it is in the session map. The index is
//! changed under the session's lock by every write that creates the session
//! or changes its owner or `updated_at`, and by every removal; its lock is a
//! leaf (taken last, never held while taking another). A page is read in
//! two steps: ids from the index, then each session under its own lock; a
//! session whose sort key moved in between (written during the listing) is
//! left out, as the cursor rules allow.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use statestore_core::{ListCursor, ListOrder, ListQuery, SessionId, Timestamp};

/// Where a session sits in the indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) user_id: Option<String>,
    pub(crate) updated_at: Timestamp,
}

/// One index: ids in order, and ids by last write.
#[derive(Default)]
struct Index {
    ids: BTreeSet<SessionId>,
    recent: BTreeMap<Timestamp, BTreeSet<SessionId>>,
}

impl Index {
    fn insert(&mut self, id: &SessionId, at: Timestamp) {
        self.ids.insert(id.clone());
        self.recent.entry(at).or_default().insert(id.clone());
    }

    fn remove(&mut self, id: &SessionId, at: Timestamp) {
        self.ids.remove(id);
        if let Some(set) = self.recent.get_mut(&at) {
            set.remove(id);
            if set.is_empty() {
                self.recent.remove(&at);
            }
        }
    }

    /// Up to `n` ids after `cursor` in `order`, within `updated`'s `until`
    /// (a `Recent` walk stops at its `from`).
    fn next(
        &self,
        order: ListOrder,
        cursor: Option<&ListCursor>,
        query: &ListQuery,
        n: usize,
    ) -> Vec<(SessionId, Timestamp)> {
        match order {
            ListOrder::Recent => {
                let from = query.updated.from.unwrap_or_default();
                let upper = match (cursor, query.updated.until) {
                    (Some(c), Some(u)) if u <= c.updated_at => Bound::Excluded(u),
                    (Some(c), _) => Bound::Included(c.updated_at),
                    (None, Some(u)) => Bound::Excluded(u),
                    (None, None) => Bound::Unbounded,
                };
                let mut out = Vec::with_capacity(n);
                for (&at, ids) in self.recent.range((Bound::Included(from), upper)).rev() {
                    let after_cursor: Box<dyn Iterator<Item = &SessionId>> = match cursor {
                        Some(c) if c.updated_at == at => Box::new(
                            ids.range::<str, _>((Bound::Unbounded, Bound::Excluded(c.id.as_str())))
                                .rev(),
                        ),
                        _ => Box::new(ids.iter().rev()),
                    };
                    for id in after_cursor {
                        out.push((id.clone(), at));
                        if out.len() == n {
                            return out;
                        }
                    }
                }
                out
            }
            _ => {
                let lower = cursor.map_or(Bound::Unbounded, |c| Bound::Excluded(c.id.as_str()));
                self.ids
                    .range::<str, _>((lower, Bound::Unbounded))
                    .take(n)
                    .map(|id| (id.clone(), Timestamp::default()))
                    .collect()
            }
        }
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The indexes of all sessions and of each user's.
#[derive(Default)]
pub(crate) struct Listing {
    all: Index,
    users: HashMap<String, Index>,
}

impl Listing {
    /// Moves `id` from where it was listed (`None`: nowhere) to `now`
    /// (`None`: removed).
    pub(crate) fn moved(&mut self, id: &SessionId, was: Option<&Listed>, now: Option<&Listed>) {
        if was == now {
            return;
        }
        if let Some(was) = was {
            self.all.remove(id, was.updated_at);
            if let Some(user) = &was.user_id
                && let Some(index) = self.users.get_mut(user)
            {
                index.remove(id, was.updated_at);
                if index.len() == 0 {
                    self.users.remove(user);
                }
            }
        }
        if let Some(now) = now {
            self.all.insert(id, now.updated_at);
            if let Some(user) = &now.user_id {
                self.users
                    .entry(user.clone())
                    .or_default()
                    .insert(id, now.updated_at);
            }
        }
    }

    fn index(&self, user: Option<&String>) -> Option<&Index> {
        match user {
            Some(user) => self.users.get(user),
            None => Some(&self.all),
        }
    }

    /// Up to `n` candidates after `cursor`, with the `updated_at` they are
    /// indexed under (zero in id order).
    pub(crate) fn candidates(
        &self,
        query: &ListQuery,
        cursor: Option<&ListCursor>,
        n: usize,
    ) -> Vec<(SessionId, Timestamp)> {
        self.index(query.user_id.as_ref())
            .map(|index| index.next(query.order, cursor, query, n))
            .unwrap_or_default()
    }

    /// How many sessions the index of the query's user holds.
    pub(crate) fn len(&self, user: Option<&String>) -> usize {
        self.index(user).map_or(0, Index::len)
    }

    /// Every (id, listed) entry, for tests.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(SessionId, Listed)> {
        let mut out = Vec::new();
        for (&at, ids) in &self.all.recent {
            for id in ids {
                let user_id = self
                    .users
                    .iter()
                    .find(|(_, index)| index.ids.contains(id))
                    .map(|(u, _)| u.clone());
                out.push((
                    id.clone(),
                    Listed {
                        user_id,
                        updated_at: at,
                    },
                ));
            }
        }
        out
    }
}
