//! The Kubernetes manifests under `deploy/kubernetes/` parse, and the cluster deployment has what cluster
//! mode relies on. No Kubernetes control plane runs here, so they are checked, not applied.

use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn manifests(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/kubernetes")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every document of a YAML file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("read manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_manifest_parses_with_a_kind_and_a_name() {
    for path in manifests("").into_iter().chain(manifests("cluster")) {
        for doc in documents(&path) {
            assert!(doc["apiVersion"].is_string(), "{}: {doc}", path.display());
            assert!(doc["kind"].is_string(), "{}: {doc}", path.display());
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: {doc}",
                path.display()
            );
        }
    }
}

#[test]
fn the_cluster_deployment_runs_nodes_on_the_shared_database() {
    let files = manifests("cluster");
    let docs: Vec<Value> = files.iter().flat_map(|p| documents(p)).collect();
    let secret = kind(&docs, "Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    assert!(secret["stringData"]["database-url"]
        .as_str()
        .is_some_and(|u| u.starts_with("postgres://")));

    let deployment = kind(&docs, "Deployment");
    assert!(deployment["spec"]["replicas"].as_u64() >= Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    for secret_env in ["WAFER_DATABASE", "WAFER_TOKEN", "WAFER_SECRETS_KEY"] {
        assert_eq!(
            env(secret_env)["valueFrom"]["secretKeyRef"]["name"],
            secret_name,
            "{secret_env} comes from the Secret"
        );
    }
    assert_eq!(env("WAFER_LISTEN")["value"], "0.0.0.0:8080");
    assert_eq!(
        env("WAFER_NODE_ID")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert!(pod["terminationGracePeriodSeconds"].as_u64() > Some(30));

    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = kind(&docs, "Service");
    assert_eq!(&service["spec"]["selector"], labels);
    let budget = kind(&docs, "PodDisruptionBudget");
    assert_eq!(&budget["spec"]["selector"]["matchLabels"], labels);

    let scaler = kind(&docs, "ScaledObject");
    assert_eq!(
        scaler["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let trigger = &scaler["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "postgresql");
    assert_eq!(trigger["metadata"]["connectionFromEnv"], "WAFER_DATABASE");
    assert!(trigger["metadata"]["query"]
        .as_str()
        .is_some_and(|q| q.contains("status = 'queued'")));
}

#[test]
fn the_node_agent_runs_once_per_node_on_the_socket_the_runtime_names() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes");
    let docs = documents(&path.join("node-agent.yaml"));
    let daemonset = kind(&docs, "DaemonSet");
    let pod = &daemonset["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args.first(), Some(&"node"));
    let socket = args
        .iter()
        .skip_while(|a| **a != "--socket")
        .nth(1)
        .expect("--socket");
    // The socket is on the host, where the shims are.
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| socket.starts_with(m["mountPath"].as_str().unwrap_or("-")))
        .expect("the socket's directory is mounted");
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    assert_eq!(volume["hostPath"]["path"], mount["mountPath"]);
    assert_eq!(container["securityContext"]["privileged"], true);

    // containerd's wafer runtime names the same socket.
    let config: toml::Table =
        toml::from_str(&std::fs::read_to_string(path.join("containerd-config.toml")).unwrap())
            .expect("containerd-config.toml parses");
    let runtime =
        &config["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["wafer"];
    assert_eq!(
        runtime["runtime_type"].as_str(),
        Some("io.containerd.wafer.v1")
    );
    assert_eq!(runtime["options"]["node_agent"].as_str(), Some(*socket));
    assert!(
        runtime["options"]["SystemdCgroup"].is_bool(),
        "runwasi's shim library refuses options without SystemdCgroup"
    );
}
