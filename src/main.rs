//! The `tabby` command: parses the command line and dispatches to the subcommands.

mod bench_cmd;
mod bench_light;
mod bench_proc;
mod bench_reflector;
mod bench_rib;
mod datastore_cmd;
mod http;
mod lab_cmd;
mod logging;
mod node_cmd;
mod policy_cmd;
mod route_reflector_cmd;
mod speaker_cmd;
mod status_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// BGP routing agent for flat L3 pod networks.
#[derive(Debug, Parser)]
#[command(name = "tabby", version, about)]
struct Cli {
    /// Log format on stderr (level from RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Human)]
    log_format: logging::Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent: routes, interfaces and BGP from the datastore.
    Node(node_cmd::Args),
    /// Network policy: `tabby policy explain` (the verdict on one connection, and why).
    Policy(policy_cmd::PolicyArgs),
    /// Run a standalone route reflector: BGP sessions from the datastore, no dataplane.
    RouteReflector(route_reflector_cmd::Args),
    /// Run a standalone BGP speaker until SIGTERM or SIGINT.
    Speaker(speaker_cmd::Args),
    /// Print the peers of a running agent or speaker, like `calicoctl node status`.
    Status(status_cmd::StatusArgs),
    /// Print the routes received by a running agent or speaker, as JSON.
    Routes(status_cmd::RoutesArgs),
    /// Look at the datastore: what tabby reads, and the CRDs it needs.
    Datastore(datastore_cmd::DatastoreArgs),
    /// Benchmarks: `tabby bench routes` (route programming against `ip -batch`) and
    /// `tabby bench reflector` (route reflector convergence against BIRD); root.
    Bench(bench_cmd::Args),
    /// Multi-node topologies in network namespaces: `tabby lab up|status|exec|down` (root).
    Lab(lab_cmd::Args),
}

/// Large tables (a million routes) grow without leaving copies behind, and freed memory is
/// reused across the runtime's threads (see tabby-sys's `malloc`), unless the user tuned
/// glibc's allocator through its environment variables.
fn tune_allocator() {
    let tunables = AllocatorTunables::unless_set(|name| std::env::var_os(name).is_some());
    if tunables.large_blocks {
        tabby_sys::malloc::map_large_blocks();
    }
    if tunables.arenas {
        // One arena per runtime worker thread (tokio starts one per CPU).
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        tabby_sys::malloc::limit_arenas(cpus);
    }
}

/// Which glibc tunables tabby sets itself: those the environment does not set.
#[derive(Debug, PartialEq, Eq)]
struct AllocatorTunables {
    large_blocks: bool,
    arenas: bool,
}

impl AllocatorTunables {
    fn unless_set(is_set: impl Fn(&str) -> bool) -> AllocatorTunables {
        AllocatorTunables {
            large_blocks: !is_set("MALLOC_MMAP_THRESHOLD_"),
            arenas: !is_set("MALLOC_ARENA_MAX"),
        }
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Node(args) => node_cmd::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::RouteReflector(args) => route_reflector_cmd::run(args),
        Command::Speaker(args) => speaker_cmd::run(args),
        Command::Status(args) => status_cmd::status(args),
        Command::Routes(args) => status_cmd::routes(args),
        Command::Datastore(args) => datastore_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Lab(args) => lab_cmd::run(args),
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::AllocatorTunables;

    #[test]
    fn tabby_sets_both_allocator_tunables_when_the_environment_sets_neither() {
        let t = AllocatorTunables::unless_set(|_| false);
        assert_eq!(
            t,
            AllocatorTunables {
                large_blocks: true,
                arenas: true
            }
        );
    }

    #[test]
    fn an_allocator_tunable_set_in_the_environment_is_left_to_glibc() {
        let t = AllocatorTunables::unless_set(|name| name == "MALLOC_ARENA_MAX");
        assert_eq!(
            t,
            AllocatorTunables {
                large_blocks: true,
                arenas: false
            }
        );
        let t = AllocatorTunables::unless_set(|name| name == "MALLOC_MMAP_THRESHOLD_");
        assert_eq!(
            t,
            AllocatorTunables {
                large_blocks: false,
                arenas: true
            }
        );
    }
}
