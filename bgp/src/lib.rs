//! tabby-bgp: tabby's BGP-4 speaker.
//!
//! - [`wire`]: the message codec (RFC 4271, 4760, 6793, 7911, 8654, 8950) with the revised
//!   error handling of RFC 7606. Pure functions of bytes and the negotiated context.
//! - [`fsm`]: the session state machine of RFC 4271 §8, sans-IO: events and `now` in, actions
//!   out.
//! - [`speaker`]: the tokio shell: listener, one task per session, and the API the rest of
//!   tabby uses to configure peers, originate prefixes and read what peers announce.

pub mod fsm;
pub mod prefix;
pub mod rib;
pub mod speaker;
pub mod wire;

pub use prefix::{Family, Prefix, PrefixError};
