//! tabby-sys: the only crate of the workspace that may use `unsafe` (STYLE.md 8).
//!
//! Each module wraps one Linux interface that no safe crate offers, behind a safe function
//! that checks its arguments, so the rest of tabby keeps `unsafe_code = "forbid"`. Every
//! `unsafe` block is opted into with `#[allow(unsafe_code)]` where it stands and carries a
//! `// SAFETY:` comment. Keep this crate small: policy and error vocabulary belong to the
//! callers (e.g. `tabby-bgp`'s `speaker::md5`), only the system call belongs here.

pub mod malloc;
pub mod tcp_md5;
