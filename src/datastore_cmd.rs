//! `tabby datastore`: look at what tabby reads.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tabby_datastore::kubernetes::KubernetesOptions;
use tabby_datastore::{Datastore, DatastoreSpec, Event};

/// `tabby datastore ...`.
#[derive(Debug, Args)]
pub struct DatastoreArgs {
    #[command(subcommand)]
    command: DatastoreCommand,
}

#[derive(Debug, Subcommand)]
enum DatastoreCommand {
    /// Print every object tabby sees, typed and validated, and the errors it found.
    Dump(DumpArgs),
    /// Print the CustomResourceDefinitions of the Calico kinds tabby reads (YAML).
    Crds,
}

/// Where the datastore is: shared by every command that reads it.
#[derive(Debug, Args, Clone)]
pub struct Source {
    /// `file:DIR` or `kubernetes`.
    #[arg(long, value_parser = parse_spec)]
    pub datastore: DatastoreSpec,
    /// Kubeconfig for `--datastore kubernetes` (default: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace tabby runs in: BGP password Secrets are read there, and namespaced
    /// objects of the file datastore without a namespace go there.
    #[arg(long, default_value = "kube-system")]
    pub namespace: String,
}

fn parse_spec(s: &str) -> Result<DatastoreSpec, String> {
    s.parse()
}

impl Source {
    /// Starts the datastore.
    pub async fn start(&self) -> anyhow::Result<Datastore> {
        Ok(match &self.datastore {
            DatastoreSpec::File(dir) => Datastore::file(dir, &self.namespace),
            DatastoreSpec::Kubernetes => {
                let options = KubernetesOptions {
                    kubeconfig: self.kubeconfig.clone(),
                    namespace: self.namespace.clone(),
                };
                Datastore::kubernetes(&options).await?
            }
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    source: Source,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Yaml)]
    output: Output,
    /// How long to wait for the datastore to be in sync, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// Runs `tabby datastore ...`.
pub fn run(args: DatastoreArgs) -> ExitCode {
    match args.command {
        DatastoreCommand::Crds => {
            print!("{}", tabby_datastore::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        DatastoreCommand::Dump(dump_args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("tabby: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(dump(dump_args)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("tabby: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

async fn dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let mut ds = args.source.start().await?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let event = match tokio::time::timeout_at(deadline, ds.next()).await {
            Ok(Some(e)) => e,
            Ok(None) => anyhow::bail!("the datastore stopped before it was in sync"),
            Err(_) => anyhow::bail!(
                "the datastore was not in sync after {} s; errors so far: {}",
                args.timeout,
                errors
                    .iter()
                    .map(|e: &String| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        match event {
            Event::Update {
                key,
                object: Some(o),
            } => objects.push((key, o)),
            Event::Update { key, object: None } => objects.retain(|(k, _)| *k != key),
            Event::Error(e) => errors.push(e.to_string()),
            Event::Connected(_) => {}
            Event::InSync => break,
        }
    }
    objects.sort_by(|a, b| a.0.cmp(&b.0));
    let unsupported: Vec<Value> = objects
        .iter()
        .filter_map(|(k, o)| {
            let fields = o.unsupported_fields();
            (!fields.is_empty()).then(|| json!({"object": k.to_string(), "fields": fields}))
        })
        .collect();
    let doc = json!({
        "objects": objects.iter().map(|(_, o)| o.to_json()).collect::<Vec<_>>(),
        "errors": errors,
        "unsupported": unsupported,
    });
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&doc)?),
        Output::Yaml => {
            for (key, o) in &objects {
                println!("---");
                println!("# {key}");
                print!("{}", tabby_datastore::crd::json_to_yaml(&o.to_json()));
            }
            for u in &unsupported {
                eprintln!(
                    "unsupported (ignored): {} {}",
                    u["object"].as_str().unwrap_or_default(),
                    u["fields"]
                );
            }
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{} objects, {} errors", objects.len(), errors.len());
        }
    }
    // Errors are configuration the user should fix: say so in the exit code too.
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
