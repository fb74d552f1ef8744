//! The architecture's dependency rule (ARCHITECTURE.md, "Dependency rule"), checked on the
//! workspace's manifests through `cargo metadata`: which workspace crate may depend on which,
//! only the store talks SQL, the workflows crate stays deterministic, the domain crate has no
//! I/O, and the API and the activities reach Microsoft, CIPP and secret providers only through
//! the connection layer. Dev-dependencies (tests) are exempt.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Each workspace crate's normal dependencies: (name, kind) of every package.
fn workspace_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let normal: BTreeSet<String> = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|dependency| dependency["kind"].is_null())
            .map(|dependency| dependency["name"].as_str().expect("name").to_owned())
            .collect();
        crates.insert(name, normal);
    }
    crates
}

/// Which workspace crates each workspace crate may depend on (normal dependencies).
const ALLOWED_WORKSPACE_DEPENDENCIES: &[(&str, &[&str])] = &[
    ("entra-sync-domain", &[]),
    ("entra-sync-directory", &["entra-sync-domain"]),
    ("entra-sync-store", &["entra-sync-domain"]),
    ("entra-sync-secrets", &["entra-sync-directory"]),
    ("entra-sync-simulator", &[]),
    ("entra-sync-workflows", &[]),
    (
        "entra-sync-connection",
        &[
            "entra-sync-domain",
            "entra-sync-directory",
            "entra-sync-store",
            "entra-sync-secrets",
        ],
    ),
    (
        "entra-sync-activities",
        &[
            "entra-sync-domain",
            "entra-sync-connection",
            "entra-sync-store",
            "entra-sync-workflows",
        ],
    ),
    (
        "entra-sync-api",
        &[
            "entra-sync-domain",
            "entra-sync-connection",
            "entra-sync-store",
            "entra-sync-workflows",
        ],
    ),
    (
        "entra-sync-bench",
        // The benchmarks sit on top, like the binary: the scale part runs the binary's own
        // processes and seeds through the simulator.
        &[
            "entra-sync-domain",
            "entra-sync-store",
            "entra-sync-simulator",
            "entra-sync",
            // The worker's default batch size and the batch children's workflow ids, with
            // which the scale part reads and projects a run's histories.
            "entra-sync-activities",
            "entra-sync-workflows",
        ],
    ),
    (
        "entra-sync",
        &[
            "entra-sync-domain",
            "entra-sync-connection",
            "entra-sync-store",
            "entra-sync-secrets",
            "entra-sync-workflows",
            "entra-sync-activities",
            "entra-sync-api",
            "entra-sync-simulator",
        ],
    ),
    ("entra-sync-tests", &[]),
];

#[test]
fn workspace_crates_depend_only_on_the_layers_below_them() {
    let crates = workspace_dependencies();
    let workspace: BTreeSet<&str> = crates.keys().map(String::as_str).collect();
    let rules: BTreeMap<&str, &[&str]> = ALLOWED_WORKSPACE_DEPENDENCIES.iter().copied().collect();
    for (name, dependencies) in &crates {
        let allowed = rules
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} has no rule in ALLOWED_WORKSPACE_DEPENDENCIES: add it (and to ARCHITECTURE.md)"));
        for dependency in dependencies {
            if workspace.contains(dependency.as_str()) {
                assert!(
                    allowed.contains(&dependency.as_str()),
                    "{name} may not depend on {dependency} (ARCHITECTURE.md, dependency rule)"
                );
            }
        }
    }
}

#[test]
fn only_the_store_talks_sql() {
    // The benchmark measures a raw COPY as the floor the store is compared against.
    let allowed = ["entra-sync-store", "entra-sync-bench"];
    for (name, dependencies) in workspace_dependencies() {
        if dependencies.contains("sqlx") {
            assert!(allowed.contains(&name.as_str()), "{name} depends on sqlx");
        }
    }
}

#[test]
fn the_workflows_crate_depends_only_on_deterministic_building_blocks() {
    let allowed = [
        "temporalio-sdk",
        "temporalio-common",
        "temporalio-macros",
        "temporalio-workflow",
        "futures",
        "serde",
        "serde_json",
    ];
    let crates = workspace_dependencies();
    for dependency in &crates["entra-sync-workflows"] {
        assert!(
            allowed.contains(&dependency.as_str()),
            "the workflows crate may not depend on {dependency}"
        );
    }
}

#[test]
fn the_domain_crate_has_no_io_dependency() {
    // unicode-normalization is pure computation (NFC for the one email normalization);
    // foldhash is a hasher (the mapping index's maps).
    let allowed = [
        "foldhash",
        "regex",
        "unicase",
        "strsim",
        "thiserror",
        "uuid",
        "unicode-normalization",
    ];
    let crates = workspace_dependencies();
    for dependency in &crates["entra-sync-domain"] {
        assert!(
            allowed.contains(&dependency.as_str()),
            "the domain crate may not depend on {dependency} (pure rules: no I/O, no async, no serde)"
        );
    }
}

#[test]
fn the_api_and_the_activities_reach_providers_only_through_the_connection_layer() {
    let crates = workspace_dependencies();
    let forbidden = [
        "entra-sync-directory",
        "entra-sync-secrets",
        "reqwest",
        "sqlx",
    ];
    for name in ["entra-sync-api", "entra-sync-activities"] {
        for dependency in forbidden {
            assert!(
                !crates[name].contains(dependency),
                "{name} depends on {dependency}; go through entra-sync-connection"
            );
        }
    }
    for dependency in [
        "entra-sync-api",
        "entra-sync-activities",
        "entra-sync-workflows",
        "temporalio-sdk",
        "axum",
    ] {
        assert!(
            !crates["entra-sync-connection"].contains(dependency),
            "the connection layer may not depend on {dependency}"
        );
    }
}

#[test]
fn only_the_binary_exports_traces_and_only_process_boundaries_propagate_them() {
    let crates = workspace_dependencies();
    // The OpenTelemetry SDK and the OTLP exporter are wired once, in the binary; the libraries
    // emit `tracing` spans.
    for (name, dependencies) in &crates {
        for exporter in ["opentelemetry_sdk", "opentelemetry-otlp"] {
            assert!(
                !dependencies.contains(exporter) || name == "entra-sync",
                "{name} depends on {exporter}; only the binary sets up the exporter"
            );
        }
    }
    // The trace context is read and written where a trace crosses a process: the API (a
    // caller's `traceparent`, the workflow start's header) and the activities (their parent).
    // The workflows only copy the header's bytes, with no OpenTelemetry crate.
    let propagating = ["entra-sync-api", "entra-sync-activities", "entra-sync"];
    for (name, dependencies) in &crates {
        for api in ["opentelemetry", "tracing-opentelemetry"] {
            assert!(
                !dependencies.contains(api) || propagating.contains(&name.as_str()),
                "{name} depends on {api}; only the API, the activities and the binary propagate trace context"
            );
        }
    }
}
