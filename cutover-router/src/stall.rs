//! A clock that runs while a client keeps something waiting: started by the first `Pending`,
//! stopped by progress, expired after its timeout. The send timeout of a client's socket
//! (`client_stream`) and the body timeout of a client's request body (`body`) are one each.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub(crate) struct StallClock {
    timeout: Duration,
    /// Created at the first wait, moved at the next.
    timer: Option<Pin<Box<Sleep>>>,
    /// The timer runs for the current wait.
    running: bool,
}

impl StallClock {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            timer: None,
            running: false,
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Progress: the next wait starts the clock again.
    pub(crate) fn moved(&mut self) {
        self.running = false;
    }

    /// The thing waits (it returned `Pending`): whether it has waited the whole timeout. If
    /// not, the task is woken when it will have.
    pub(crate) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if !self.running {
            self.running = true;
            timer.as_mut().reset(Instant::now() + timeout);
        }
        timer.as_mut().poll(cx).is_ready()
    }
}
