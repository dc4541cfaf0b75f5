//! A child process that is SIGKILLed and reaped on demand, and on drop, so a
//! failing scenario leaves no redis-server or chat-server behind.

use std::process::Child;

#[derive(Default)]
pub struct Killable(Option<Child>);

impl Killable {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// SIGKILL and wait (nothing when it is not running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it was killed or has exited by itself.
    pub fn gone(&mut self) -> bool {
        self.0
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}
