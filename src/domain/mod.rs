//! The product's own vocabulary, shared by every layer above the protocol: the records it keeps
//! ([`model`]) and the pure rules that decide what may be done with them ([`rules`]). No I/O, no
//! storage: every storage backend and every use case calls the same rules, so a decision is
//! made in one place whichever database holds the rows.

pub mod admin;
pub mod model;
pub mod rules;
