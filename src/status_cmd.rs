//! `tabby status` and `tabby routes`: read a running agent's HTTP endpoints.

use crate::http;
use anyhow::{bail, Context as _};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::ExitCode;

/// Flags of `tabby status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Address of the agent's HTTP endpoints.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9099")]
    http: SocketAddr,
    /// Print the raw `/status` JSON.
    #[arg(long)]
    json: bool,
}

/// Flags of `tabby routes`.
#[derive(Debug, clap::Args)]
pub struct RoutesArgs {
    /// Address of the agent's HTTP endpoints.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9099")]
    http: SocketAddr,
}

/// Prints the peer table (or the JSON).
pub fn status(args: StatusArgs) -> ExitCode {
    finish(fetch(args.http, "/status").and_then(|body| {
        if args.json {
            println!("{}", body.trim_end());
        } else {
            let doc: Value = serde_json::from_str(&body).context("/status is not JSON")?;
            print!("{}", table(&doc));
        }
        Ok(())
    }))
}

/// Prints `/routes`.
pub fn routes(args: RoutesArgs) -> ExitCode {
    finish(fetch(args.http, "/routes").map(|body| println!("{}", body.trim_end())))
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tabby: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn fetch(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, body) = runtime.block_on(http::get(addr, path))?;
    if status != 200 {
        bail!("GET {path} from {addr}: HTTP {status}");
    }
    Ok(body)
}

/// The peer table, shaped like `calicoctl node status`.
pub fn table(doc: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let bgp = &doc["bgp"];
    let mut out = format!(
        "tabby process is running ({}).\n\nBGP status: router id {}, AS {}\n",
        if doc["ready"] == Value::Bool(true) {
            "ready"
        } else {
            "not ready"
        },
        text(&bgp["router_id"]),
        text(&bgp["asn"]),
    );
    let header = [
        "PEER ADDRESS",
        "PEER TYPE",
        "ASN",
        "STATE",
        "SINCE",
        "INFO",
        "PREFIXES RX/ACC/TX",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    for p in bgp["peers"].as_array().into_iter().flatten() {
        let state = text(&p["state"]);
        let mut info = state.clone();
        if state != "Established" {
            if let Some(e) = p["last_error"].as_str() {
                info = format!("{state} ({e})");
            }
        }
        rows.push(vec![
            text(&p["peer"]),
            text(&p["kind"]),
            text(&p["asn"]),
            if state == "Established" {
                "up"
            } else {
                "start"
            }
            .to_string(),
            text(&p["since"]),
            info,
            format!(
                "{}/{}/{}",
                text(&p["received"]),
                text(&p["accepted"]),
                text(&p["advertised"])
            ),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|\n"
    };
    out.push_str(&rule);
    out.push_str(&line(&header.map(String::from)));
    out.push_str(&rule);
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule);
    if rows.is_empty() {
        out.push_str("No BGP peers configured.\n");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn table_shows_each_peer_with_its_rfc_state() {
        let doc = json!({
            "ready": true,
            "bgp": { "router_id": "10.0.0.1", "asn": 65000, "peers": [
                { "peer": "10.0.0.2", "kind": "peer", "asn": 65000, "state": "Established",
                  "since": "2024-01-01T00:00:00Z", "received": 3, "accepted": 3, "advertised": 1 },
                { "peer": "10.0.0.3", "kind": "peer", "asn": 65001, "state": "Active",
                  "since": "2024-01-01T00:00:00Z", "received": 0, "accepted": 0, "advertised": 0,
                  "last_error": "connection lost" },
            ]}
        });
        let t = table(&doc);
        assert!(t.contains("| 10.0.0.2     | peer      | 65000 | up    |"));
        assert!(t.contains("Active (connection lost)"));
        assert!(t.contains("3/3/1"));
    }
}
