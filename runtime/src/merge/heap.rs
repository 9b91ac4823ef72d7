//! The merge's heap: lane indices ordered by each lane's head item.

use std::cmp::Ordering;

use super::lane::Lane;

/// A binary min-heap of lane indices, ordered by each lane's head item under the merged order
/// `(key before the name, name, source, identifier)` (the first part only in an order other than
/// by name); lanes are in source-name order, so the index stands in for the
/// source name. The items stay in their lanes' buffers: only indices move, and each summary moves
/// once, from its batch into the page.
pub(super) struct LaneHeap {
    lanes: Vec<usize>,
}

impl LaneHeap {
    pub(super) fn with_capacity(n: usize) -> LaneHeap {
        LaneHeap {
            lanes: Vec::with_capacity(n),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Whether lane `a`'s head comes before lane `b`'s.
    fn before(a: usize, b: usize, lanes: &[Lane]) -> bool {
        let (x, y) = (
            &lanes[a].buffer.as_slice()[0],
            &lanes[b].buffer.as_slice()[0],
        );
        // In an order other than by name, each head's key before its name comes first.
        let primary = match (
            lanes[a].primaries.as_slice().first(),
            lanes[b].primaries.as_slice().first(),
        ) {
            (Some(p), Some(q)) => p.order_cmp(q),
            _ => Ordering::Equal,
        };
        primary
            .then_with(|| x.name.as_bytes().cmp(y.name.as_bytes()))
            .then(a.cmp(&b))
            .then_with(|| x.identifier.as_bytes().cmp(y.identifier.as_bytes()))
            == Ordering::Less
    }

    /// Adds a lane that has a head item.
    pub(super) fn push(&mut self, lane: usize, lanes: &[Lane]) {
        self.lanes.push(lane);
        let mut i = self.lanes.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !Self::before(self.lanes[i], self.lanes[parent], lanes) {
                break;
            }
            self.lanes.swap(i, parent);
            i = parent;
        }
    }

    /// Removes and returns the lane with the smallest head item.
    pub(super) fn pop(&mut self, lanes: &[Lane]) -> Option<usize> {
        let last = self.lanes.pop()?;
        if self.lanes.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.lanes[0], last);
        let n = self.lanes.len();
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if l < n && Self::before(self.lanes[l], self.lanes[smallest], lanes) {
                smallest = l;
            }
            if r < n && Self::before(self.lanes[r], self.lanes[smallest], lanes) {
                smallest = r;
            }
            if smallest == i {
                break;
            }
            self.lanes.swap(i, smallest);
            i = smallest;
        }
        Some(top)
    }
}
