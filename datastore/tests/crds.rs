//! deploy/crds/calico.yaml is generated from the Rust types and must stay current.

#[test]
fn committed_crds_are_the_ones_the_types_generate() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/calico.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == tabby_datastore::crd::crds_yaml(),
        "{} is stale: run `cargo run -p tabby -- datastore crds > deploy/crds/calico.yaml`",
        path.display()
    );
}

#[test]
fn every_calico_kind_has_a_crd() {
    let kinds: Vec<String> = tabby_datastore::crd::crds()
        .into_iter()
        .map(|c| c.spec.names.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "BGPConfiguration",
            "BGPPeer",
            "FelixConfiguration",
            "GlobalNetworkPolicy",
            "HostEndpoint",
            "IPAMBlock",
            "IPPool",
            "NetworkPolicy"
        ]
    );
}
