//! One waiting queue: sessions in arrival order, with each one's position
//! known in O(log n), so that answering `Stop` while waiting costs the same
//! at the back of a queue of 10,000 as at its front.

use std::collections::BTreeMap;

use super::SessionId;

/// Sessions waiting for a partner of one gender, oldest first, keyed by
/// their arrival ticket.
///
/// Beside the ordered map, a Fenwick tree counts who is still waiting in
/// each arrival slot, so a position is a prefix sum. Slots are handed out in
/// arrival order and renumbered once more than half of them (plus some
/// slack) belong to sessions that have left, so memory stays proportional
/// to the queue and each operation costs O(log n) amortized.
#[derive(Debug, Default)]
pub(super) struct WaitQueue {
    /// Ticket → (session, slot), in arrival order.
    entries: BTreeMap<u64, (SessionId, usize)>,
    /// Fenwick tree (1-based inside) over slots: 1 where a session waits.
    tree: Vec<u32>,
}

/// Free slots always allowed before a renumbering, so that a small queue is
/// not renumbered on every arrival.
const SLACK: usize = 64;

impl WaitQueue {
    /// Sessions waiting.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `id` at the back; `ticket` must be larger than every ticket
    /// queued before.
    pub(super) fn push(&mut self, ticket: u64, id: SessionId) {
        debug_assert!(
            self.entries
                .last_key_value()
                .is_none_or(|(&last, _)| last < ticket),
            "tickets must grow"
        );
        if self.tree.len() >= 2 * self.entries.len() + SLACK {
            self.renumber();
        }
        let slot = self.tree.len();
        self.append_slot();
        self.entries.insert(ticket, (id, slot));
    }

    /// Removes the session with `ticket`; returns it if it was queued.
    pub(super) fn remove(&mut self, ticket: u64) -> Option<SessionId> {
        let (id, slot) = self.entries.remove(&ticket)?;
        if self.tree.len() > 2 * self.entries.len() + SLACK {
            self.renumber();
        } else {
            self.clear_slot(slot);
        }
        Some(id)
    }

    /// The session queued with `ticket`, if any.
    pub(super) fn get(&self, ticket: u64) -> Option<SessionId> {
        self.entries.get(&ticket).map(|&(id, _)| id)
    }

    /// The 1-based position of `ticket` in the queue, if it is queued.
    pub(super) fn position(&self, ticket: u64) -> Option<usize> {
        let &(_, slot) = self.entries.get(&ticket)?;
        Some(self.prefix_sum(slot))
    }

    /// `(ticket, session)` pairs, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, SessionId)> + '_ {
        self.entries.iter().map(|(&ticket, &(id, _))| (ticket, id))
    }

    /// Appends a slot holding one waiting session. A Fenwick node `i` sums
    /// the slots `(i - lowbit(i), i]`, so the new node is 1 plus the
    /// occupied slots below it that it covers.
    fn append_slot(&mut self) {
        let node = self.tree.len() + 1;
        let low = node & node.wrapping_neg();
        let covered = self.prefix_sum_nodes(node - 1) - self.prefix_sum_nodes(node - low);
        self.tree.push(1 + covered as u32);
    }

    /// Marks `slot` as empty.
    fn clear_slot(&mut self, slot: usize) {
        let mut node = slot + 1;
        while let Some(count) = self.tree.get_mut(node - 1) {
            *count = count.saturating_sub(1);
            node += node & node.wrapping_neg();
        }
    }

    /// Occupied slots in `0..=slot`.
    fn prefix_sum(&self, slot: usize) -> usize {
        self.prefix_sum_nodes(slot + 1)
    }

    /// Sum of the first `node` slots.
    fn prefix_sum_nodes(&self, mut node: usize) -> usize {
        let mut sum = 0;
        while node > 0 {
            sum += self.tree.get(node - 1).copied().unwrap_or(0) as usize;
            node &= node - 1;
        }
        sum
    }

    /// Gives the queued sessions slots `0..len` again, in order, and
    /// rebuilds the tree from scratch in O(len).
    fn renumber(&mut self) {
        self.tree.clear();
        // Memory follows the queue down as well as up.
        self.tree.shrink_to(2 * self.entries.len() + SLACK);
        self.tree.resize(self.entries.len(), 1);
        for (slot, (_, assigned)) in self.entries.values_mut().enumerate() {
            *assigned = slot;
        }
        // Linear Fenwick construction: push each node's sum to its parent.
        for node in 1..=self.tree.len() {
            let parent = node + (node & node.wrapping_neg());
            if parent <= self.tree.len() {
                let count = self.tree[node - 1];
                self.tree[parent - 1] += count;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn positions_follow_arrivals_and_departures() {
        let mut queue = WaitQueue::default();
        for ticket in 0..5 {
            queue.push(ticket, ticket * 10);
        }
        assert_eq!(queue.position(0), Some(1));
        assert_eq!(queue.position(4), Some(5));
        assert_eq!(queue.remove(2), Some(20));
        assert_eq!(queue.remove(2), None);
        assert_eq!(queue.position(2), None);
        assert_eq!(queue.position(3), Some(3));
        assert_eq!(queue.position(4), Some(4));
        assert_eq!(queue.get(4), Some(40));
        assert_eq!(
            queue.iter().collect::<Vec<_>>(),
            vec![(0, 0), (1, 10), (3, 30), (4, 40)]
        );
    }

    /// Checks every position against `expected`, the tickets in order.
    fn assert_positions(queue: &WaitQueue, expected: &[u64]) {
        for (index, &ticket) in expected.iter().enumerate() {
            assert_eq!(queue.position(ticket), Some(index + 1), "ticket {ticket}");
        }
        assert_eq!(queue.len(), expected.len());
    }

    #[test]
    fn renumbering_on_arrival_keeps_positions() {
        let mut queue = WaitQueue::default();
        queue.push(0, 0);
        queue.push(1, 1);
        // Arrivals that leave again fill the tree up to the trigger
        // (2 * len + SLACK) without a departure reaching it.
        let mut ticket = 2;
        while queue.tree.len() < 2 * queue.len() + SLACK {
            queue.push(ticket, ticket);
            queue.remove(ticket);
            ticket += 1;
        }
        assert_positions(&queue, &[0, 1]);
        // The next arrival renumbers first: two slots, then its own.
        queue.push(ticket, ticket);
        assert_eq!(queue.tree.len(), 3);
        assert_positions(&queue, &[0, 1, ticket]);
        queue.remove(1);
        assert_positions(&queue, &[0, ticket]);
    }

    #[test]
    fn renumbering_on_departure_keeps_positions() {
        let mut queue = WaitQueue::default();
        for ticket in 0..300u64 {
            queue.push(ticket, ticket);
        }
        // Departures from the middle until the tree is rebuilt.
        let mut model: Vec<u64> = (0..300).collect();
        let before = queue.tree.len();
        for ticket in 50..250 {
            queue.remove(ticket);
            model.retain(|&t| t != ticket);
            assert_positions(&queue, &model);
        }
        assert!(
            queue.tree.len() < before,
            "the test must reach a renumbering on remove"
        );
        assert!(queue.tree.len() <= 2 * queue.len() + SLACK);
    }

    #[test]
    fn memory_stays_proportional_to_the_queue() {
        let mut queue = WaitQueue::default();
        queue.push(0, 0);
        // One session waits forever while 100,000 come and go behind it.
        for ticket in 1..100_000 {
            queue.push(ticket, ticket);
            queue.remove(ticket);
        }
        assert!(queue.tree.len() <= 2 * queue.len() + SLACK);
        assert_eq!(queue.position(0), Some(1));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push,
        Remove(usize),
    }

    proptest! {
        /// Against a plain ordered list: same members, same order, same
        /// position for every member after any sequence of arrivals and
        /// departures.
        #[test]
        fn matches_a_plain_list(ops in prop::collection::vec(
            prop_oneof![3 => Just(Op::Push), 2 => (0usize..200).prop_map(Op::Remove)],
            0..600,
        )) {
            let mut queue = WaitQueue::default();
            let mut model: Vec<u64> = Vec::new();
            let mut next = 0u64;
            for op in ops {
                match op {
                    Op::Push => {
                        queue.push(next, next + 1000);
                        model.push(next);
                        next += 1;
                    }
                    Op::Remove(pick) => {
                        if model.is_empty() {
                            continue;
                        }
                        let ticket = model.remove(pick % model.len());
                        prop_assert_eq!(queue.remove(ticket), Some(ticket + 1000));
                    }
                }
                prop_assert_eq!(queue.len(), model.len());
                prop_assert!(queue.tree.len() <= 2 * model.len() + SLACK);
                for (index, &ticket) in model.iter().enumerate() {
                    prop_assert_eq!(queue.position(ticket), Some(index + 1));
                }
                let listed: Vec<u64> = queue.iter().map(|(ticket, _)| ticket).collect();
                prop_assert_eq!(&listed, &model);
            }
        }
    }
}
