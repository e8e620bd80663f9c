//! The memory held by messages in flight, counted against `max_inflight_memory`.
//!
//! A message is charged as it is read ([`crate::data::DotReader`]) in steps of [`STEP`] octets
//! and keeps its charge until its final reply; the charge goes back when the [`Charge`] is
//! dropped, whatever path the session takes. A message that would go over the cap is read to
//! its end without being kept and answered `452 4.3.1`: eight clients sending 24 MB at once
//! cannot make the process hold 200 MB. Messages larger than [`LARGE`] may fill only three
//! quarters of the cap, so the rest is always there for ordinary mail while a few large ones
//! are being received.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Charges grow in steps of this many octets (one atomic operation per step, not per read).
pub const STEP: usize = 64 * 1024;

/// A message over this many octets counts as large (see the module documentation).
pub const LARGE: usize = 1024 * 1024;

/// The shared counter.
#[derive(Debug)]
pub struct MemoryBudget {
    cap: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            cap,
            used: AtomicUsize::new(0),
        })
    }

    /// Octets charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap that applies to a message of `size` octets.
    fn limit_for(&self, size: usize) -> usize {
        if size > LARGE {
            self.cap / 4 * 3
        } else {
            self.cap
        }
    }

    /// Takes `more` octets for a message that will then hold `size`; false when that would go
    /// over its limit (nothing taken).
    fn take(&self, more: usize, size: usize) -> bool {
        let limit = self.limit_for(size);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.checked_add(more)?;
                (after <= limit).then_some(after)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Would a message of `size` octets fit now? (For a SIZE declared at MAIL; nothing is
    /// taken, so the answer may change before its data arrives.)
    pub fn would_fit(&self, size: usize) -> bool {
        self.used().saturating_add(size) <= self.limit_for(size)
    }

    /// An empty charge for one message.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// What one message holds; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl Charge {
    /// Makes the charge cover `size` octets (rounded up to [`STEP`]); false when the budget
    /// cannot (the charge stays as it was).
    pub fn cover(&mut self, size: usize) -> bool {
        if size <= self.held {
            return true;
        }
        let want = size.div_ceil(STEP).saturating_mul(STEP);
        if self.budget.take(want - self.held, want) {
            self.held = want;
            true
        } else {
            false
        }
    }

    /// Gives everything back now.
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.give_back(self.held);
            self.held = 0;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_capped_and_given_back() {
        let b = MemoryBudget::new(8 * LARGE);
        let mut a = b.charge();
        assert!(a.cover(1));
        assert_eq!(b.used(), STEP);
        // Large messages stop at three quarters of the cap...
        assert!(a.cover(6 * LARGE));
        assert!(!a.cover(6 * LARGE + 1));
        assert_eq!(b.used(), 6 * LARGE);
        // ...and small ones may use the rest.
        let mut small = b.charge();
        assert!(small.cover(LARGE));
        let mut third = b.charge();
        assert!(third.cover(LARGE));
        assert!(!third.cover(LARGE + STEP));
        assert!(!b.would_fit(STEP));
        drop(a);
        assert_eq!(b.used(), 2 * LARGE);
        assert!(b.would_fit(4 * LARGE));
        assert!(!b.would_fit(5 * LARGE));
        small.release();
        third.release();
        assert_eq!(b.used(), 0);
    }
}
