//! Functions as OCI images: `wafer package`, `wafer push` and `wafer pull` against a real registry
//! (Debian's `docker-registry`, the CNCF distribution registry), and `wafer deploy oci://REF`.
//!
//! Without `docker-registry` the registry test skips with a message, unless `CI` is set: `.ci/run`
//! installs it.

mod common;

use common::registry::Registry;
use common::*;

fn wafer(args: &[&str]) -> std::process::Output {
    wafer_cli("http://127.0.0.1:9", args)
}

#[test]
fn a_package_is_an_oci_layout_with_both_image_forms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("hello.tar");
    let hello = format!(
        "{}/../../examples/wagi-c/hello.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = wafer(&[
        "package",
        &hello,
        "--output",
        out.to_str().unwrap(),
        "--tag",
        "hello:v1",
        "--memory",
        "32MiB",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("docker.io/library/hello:v1"));

    let mut archive = tar::Archive::new(std::fs::File::open(&out).expect("tarball"));
    let mut files = std::collections::BTreeMap::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
        files.insert(path, bytes);
    }
    let json = |bytes: &[u8]| serde_json::from_slice::<serde_json::Value>(bytes).expect("json");
    let blob = |digest: &str| json(&files[&format!("blobs/sha256/{}", &digest[7..])]);
    let top = json(&files["index.json"]);
    let named = &top["manifests"][0];
    assert_eq!(
        named["annotations"]["io.containerd.image.name"],
        "docker.io/library/hello:v1"
    );
    let index = blob(named["digest"].as_str().unwrap());
    let manifests = index["manifests"].as_array().expect("manifests");
    let artifact = manifests
        .iter()
        .find(|m| m["platform"]["architecture"] == "wasm")
        .expect("a wasm artifact");
    assert_eq!(artifact["platform"]["os"], "wasip1");
    let artifact = blob(artifact["digest"].as_str().unwrap());
    assert_eq!(
        artifact["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(artifact["layers"][0]["mediaType"], "application/wasm");
    let config: serde_json::Value = serde_json::from_str(
        artifact["annotations"]["dev.wafer.function.config"]
            .as_str()
            .unwrap(),
    )
    .expect("config annotation");
    assert_eq!(config["memory_mb"], 32);
    let plain = manifests
        .iter()
        .find(|m| m["platform"]["os"] == "linux")
        .expect("a linux image");
    let plain = blob(plain["digest"].as_str().unwrap());
    let image_config = blob(plain["config"]["digest"].as_str().unwrap());
    assert_eq!(image_config["config"]["Entrypoint"][0], "/app.wasm");

    // A component gets runwasi's component layer type.
    let component = format!(
        "{}/../../examples/http-js/hello.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = dir.path().join("js.tar");
    let output = wafer(&["package", &component, "--output", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let bytes = std::fs::read(&out).expect("tarball");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"));
    assert!(
        text.contains("docker.io/library/hello:latest"),
        "named after the file"
    );

    let bad = wafer(&["package", "Cargo.toml", "--output", out.to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("not a valid WebAssembly binary"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn functions_go_through_a_registry_and_deploy_from_it() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let hello = format!(
        "{}/../../examples/wagi-c/hello.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let reference = format!("{}/wafer/hello:v1", registry.address);

    // Push a .wasm with its config, pull it back byte for byte.
    let pushed = wafer(&[
        "push",
        &hello,
        &reference,
        "--memory",
        "32MiB",
        "--env",
        "GREETING=hi",
    ]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let pulled_path = dir.path().join("pulled.wasm");
    let pulled = wafer(&[
        "pull",
        &reference,
        "--output",
        pulled_path.to_str().unwrap(),
    ]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    assert_eq!(
        std::fs::read(&pulled_path).expect("pulled"),
        std::fs::read(&hello).expect("original")
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pulled.json")).expect("config"))
            .expect("json");
    assert_eq!(config["memory_mb"], 32);
    assert_eq!(config["env"]["GREETING"], "hi");

    // A tarball from `wafer package` pushes as it is.
    let tarball = dir.path().join("wc.tar");
    let wordcount = format!(
        "{}/../../examples/command-c/wordcount.wasm",
        env!("CARGO_MANIFEST_DIR")
    );
    let packaged = wafer(&[
        "package",
        &wordcount,
        "--output",
        tarball.to_str().unwrap(),
        "--kind",
        "command",
    ]);
    assert!(packaged.status.success(), "{}", stderr(&packaged));
    let wc_reference = format!("{}/wafer/wordcount:v1", registry.address);
    let pushed = wafer(&["push", tarball.to_str().unwrap(), &wc_reference]);
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    // Deploy straight from the registry: the image's config, with flags on top.
    let server = Server::start();
    let deployed = server.cli(&[
        "deploy",
        &format!("oci://{reference}"),
        "--name",
        "hello",
        "--timeout",
        "5s",
    ]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let (status, info) = server.get_json("/v1/functions/hello").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["config"]["memory_mb"], 32, "{info}");
    assert_eq!(info["config"]["timeout_ms"], 5000, "{info}");
    let (status, body) = server.get_text("/fn/hello?name=registry").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello, registry!\n"), "{body}");
    assert!(
        body.contains("greeting=hi"),
        "the image's env reaches the guest: {body}"
    );
    let deployed = server.cli(&["deploy", &format!("oci://{wc_reference}"), "--name", "wc"]);
    assert!(deployed.status.success(), "{}", stderr(&deployed));
    let (status, reply) = server
        .call_json(reqwest::Method::POST, "/v1/functions/wc/invoke", "a b c")
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["stdout"], "0 3 5\n");

    // Unknown images and registries fail with a message.
    let missing = server.cli(&[
        "deploy",
        &format!("oci://{}/wafer/nope:v1", registry.address),
        "--name",
        "nope",
    ]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("cannot fetch"),
        "{}",
        stderr(&missing)
    );
}
