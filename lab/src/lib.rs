//! tabby-lab: multi-node topologies built from network namespaces (`tabby lab`).
//!
//! A topology ([`topology::Topology`], YAML, see docs/lab.md) names L2 segments, nodes, pods,
//! route reflectors and external peers. [`up`] resolves it, builds it ([`build::create`]:
//! a netns per segment switch, node, reflector, peer and pod), acts as the CNI plugin for the
//! pods, writes the resources a cluster would hold into the lab's file datastore
//! ([`resources`]), starts one `tabby node` per node, one `tabby route-reflector` per
//! reflector and BIRD or GoBGP per external peer, each detached and logging to its own file, then
//! waits for BGP to converge and measures pod-to-pod reachability ([`probe`]).
//! [`build::down`] removes everything, from the lab's name alone ([`state`]).

#![warn(missing_docs)]

pub mod bird;
pub mod build;
pub mod gobgp;
pub mod net;
pub mod probe;
pub mod resources;
pub mod state;
pub mod sys;
pub mod topology;

pub use build::{down, RunOptions};
pub use state::Layout;
pub use topology::{Lab, Topology, TopologyError};

use std::time::{Duration, Instant};

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology is invalid.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A resource file is invalid.
    #[error(transparent)]
    Resource(#[from] resources::ResourceError),
    /// A command failed.
    #[error(transparent)]
    Sys(#[from] sys::SysError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A lab of that name exists already.
    #[error("a lab named {0:?} exists already (remove it with `tabby lab down --name {0}`, or pick another --name)")]
    Exists(String),
    /// No lab of that name runs.
    #[error("no lab named {0:?} is running (`tabby lab up` starts one)")]
    NotFound(String),
    /// `lab exec` or `lab restart` named something the lab does not have.
    #[error("the lab has no node, reflector, peer or pod (namespace/name) called {0:?}")]
    NoSuchTarget(String),
    /// The lab did not converge in time; every problem is named.
    #[error("the lab did not converge within {timeout:?}:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    NotConverged {
        /// The timeout.
        timeout: Duration,
        /// What was wrong at the deadline.
        problems: Vec<String>,
    },
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What [`converge`] saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every process's sessions.
    pub statuses: Vec<probe::HostStatus>,
    /// Pod-to-pod reachability.
    pub matrix: probe::Matrix,
    /// How long convergence took.
    pub elapsed: Duration,
}

impl Report {
    /// Everything that is not as the topology wants.
    pub fn problems(&self) -> Vec<String> {
        self.statuses
            .iter()
            .filter_map(probe::HostStatus::problem)
            .chain(
                self.matrix
                    .failures
                    .iter()
                    .map(|f| format!("no answer: {f}")),
            )
            .collect()
    }

    /// `Ok` when nothing is wrong, else [`LabError::NotConverged`] naming every problem.
    pub fn check(&self, timeout: Duration) -> Result<(), LabError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LabError::NotConverged { timeout, problems })
        }
    }

    /// The summary `lab up` and `lab status` print.
    pub fn render(&self) -> String {
        format!(
            "BGP sessions\n{}\npod-to-pod reachability (ping IPv4/IPv6; ok = answered, -- = no answer)\n{}",
            probe::render_statuses(&self.statuses),
            self.matrix.render()
        )
    }
}

/// Builds a resolved lab and starts its processes (see [`build::create`]); returns where it
/// lives. On an error the partial lab is removed again (unless it existed before).
pub fn up(lab: &Lab, run: &RunOptions, say: &dyn Fn(&str)) -> Result<Layout, LabError> {
    let layout = Layout::new(&lab.name);
    match build::create(lab, &layout, run, say) {
        Ok(()) => Ok(layout),
        Err(e @ LabError::Exists(_)) => Err(e),
        Err(e) => {
            say("building failed; removing what was built");
            let _ = build::down(&layout);
            Err(e)
        }
    }
}

/// Waits until every process has its sessions established (and tabby's are ready), then
/// measures reachability; reports progress through `say` as sessions come up. The report
/// says what did not converge within `timeout` ([`Report::problems`]).
pub fn converge(
    lab: &Lab,
    layout: &Layout,
    run: &RunOptions,
    timeout: Duration,
    say: &dyn Fn(&str),
) -> Result<Report, LabError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let expected: usize = lab
        .hosts
        .iter()
        .map(|h| probe::expected_sessions(lab, h))
        .sum();
    let mut last = None;
    let statuses = loop {
        let statuses = probe::statuses(lab, layout, run);
        let established: usize = statuses.iter().map(probe::HostStatus::established).sum();
        let ready = statuses.iter().filter(|s| s.problem().is_none()).count();
        if last != Some((established, ready)) {
            say(&format!(
                "{established}/{expected} sessions established, {ready}/{} processes converged ({:.1} s)",
                statuses.len(),
                start.elapsed().as_secs_f64()
            ));
            last = Some((established, ready));
        }
        if ready == statuses.len() || Instant::now() >= deadline {
            break statuses;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let sessions_ok = statuses.iter().all(|s| s.problem().is_none());
    if sessions_ok {
        say("measuring pod-to-pod reachability");
    }
    // Routes may still be arriving when the sessions are up: pings are retried a while,
    // but at least 10 s; after a session timeout, one pass shows what works.
    let ping_deadline = if sessions_ok {
        deadline.max(Instant::now() + Duration::from_secs(10))
    } else {
        Instant::now()
    };
    let matrix = probe::matrix(lab, layout, ping_deadline);
    let report = Report {
        statuses,
        matrix,
        elapsed: start.elapsed(),
    };
    Ok(report)
}

/// The status of a running lab: its processes' sessions and one pass of pings.
pub fn status(name: &str, run: &RunOptions) -> Result<(Lab, Report), LabError> {
    let layout = Layout::new(name);
    let lab = layout
        .read_lab()
        .map_err(|_| LabError::NotFound(name.to_string()))?;
    let start = Instant::now();
    let statuses = probe::statuses(&lab, &layout, run);
    let matrix = probe::matrix(&lab, &layout, Instant::now());
    Ok((
        lab,
        Report {
            statuses,
            matrix,
            elapsed: start.elapsed(),
        },
    ))
}

/// The netns of a target of `lab exec`: a node, reflector or peer by name, or a pod as
/// `namespace/name`.
pub fn target_netns(lab: &Lab, layout: &Layout, target: &str) -> Result<String, LabError> {
    if let Some((ns, name)) = target.split_once('/') {
        return lab
            .pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
            .map(|p| layout.pod_netns(p))
            .ok_or_else(|| LabError::NoSuchTarget(target.to_string()));
    }
    lab.host(target)
        .map(|h| layout.host_netns(&h.name))
        .ok_or_else(|| LabError::NoSuchTarget(target.to_string()))
}
