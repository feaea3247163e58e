//! The FUSE protocol, shared by both transports (`/dev/fuse`, [`crate::devfuse`], and the
//! io_uring queues, [`crate::ring`]): its messages ([`wire`]) and what each request does
//! ([`dispatch`], over [`crate::ops::Ops`]).

pub(crate) mod dispatch;
pub(crate) mod wire;
