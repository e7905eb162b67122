//! The `tabby` command: dispatches to the subcommands.

fn main() {}
