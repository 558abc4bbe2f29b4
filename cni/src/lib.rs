//! Pod networking for berth: namespaces now; CNI plugin chains and the built-in bridge to come
//! (see the pod networking issue). Until then berthd reports NetworkReady=false.

pub mod error;
pub mod ns;

pub use error::{Error, Result};
