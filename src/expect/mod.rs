//! What makes an HTTP answer healthy: the accepted statuses, and what its
//! JSON body must say (`body`). Probe rules declare it (`crate::rules`),
//! health checks judge answers by it (`crate::verify`); it imports neither.

pub mod body;

pub use body::{BodyCheck, Component};

/// What makes an answer healthy.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expect {
    /// Accepted statuses; empty: any 2xx.
    pub status: Vec<u16>,
    /// What the JSON body must say; none: the body is not read.
    pub body: Option<BodyCheck>,
}

impl Expect {
    pub fn status(status: Vec<u16>) -> Expect {
        Expect { status, body: None }
    }
}
