//! A waker that remembers whether it was woken, so that a part of a task
//! can skip its polling when nothing it waits for has happened.
//!
//! A session's task polls the HTTP/3 control plane ([`super::h3::H3`]) on
//! every wake-up, and most wake-ups are for something else (a frame on the
//! signaling stream, a frame queued for the client). Polling each control
//! stream takes the connection's lock and re-registers a waker, four
//! streams each time. Behind a gate, the streams register the gate's waker;
//! the control plane is polled again only after one of them woke it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// The gate of one part of a task.
#[derive(Debug)]
pub(super) struct Gate {
    flag: Arc<Flag>,
}

impl Default for Gate {
    /// A gate that is open: the first poll goes through.
    fn default() -> Gate {
        let flag = Flag::default();
        flag.woken.store(true, Ordering::Relaxed);
        Gate {
            flag: Arc::new(flag),
        }
    }
}

impl Gate {
    /// Registers the task's waker and says whether the part must be polled
    /// (it was woken, or [`Gate::open`]ed, since it last passed); closes it.
    pub(super) fn pass(&self, cx: &Context) -> bool {
        self.flag.task.register(cx.waker());
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    /// Makes the next [`Gate::pass`] go through: the part has more to do
    /// than its wakers know (it returned before polling everything, or was
    /// given something new).
    pub(super) fn open(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }

    /// The waker the part's inner futures are polled with.
    pub(super) fn waker(&self) -> Waker {
        Waker::from(self.flag.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn passes_once_then_only_after_a_wake_or_an_open() {
        let task = Arc::new(Count::default());
        let task_waker = Waker::from(task.clone());
        let cx = Context::from_waker(&task_waker);
        let gate = Gate::default();
        assert!(gate.pass(&cx), "the first poll goes through");
        assert!(!gate.pass(&cx), "closed until woken");
        gate.waker().wake_by_ref();
        assert_eq!(task.0.load(Ordering::Relaxed), 1, "the task was woken");
        assert!(gate.pass(&cx));
        assert!(!gate.pass(&cx));
        gate.open();
        assert!(gate.pass(&cx));
        assert!(!gate.pass(&cx));
        // A wake before the task registered again still opens the gate.
        gate.waker().wake_by_ref();
        gate.waker().wake_by_ref();
        assert!(gate.pass(&cx));
    }
}
