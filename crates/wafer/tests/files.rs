//! Read-only files: a function deployed with files (`wafer deploy --files DIR`, a `files` part) reads
//! them under `/` and cannot write them; one deployed without has none; a bad bundle is refused whole.

mod common;

use common::*;
use reqwest::multipart::{Form, Part};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::Path;

fn site_wasm() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/wagi-c/hello.wasm")
        .to_string_lossy()
        .into_owned()
}

/// A directory of files to deploy with.
fn public() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("index.html"), "<h1>hello</h1>").expect("write");
    std::fs::create_dir(dir.path().join("docs")).expect("mkdir");
    std::fs::write(dir.path().join("docs/a.txt"), "a").expect("write");
    dir
}

async fn get(server: &Server, path: &str) -> (StatusCode, String) {
    let (status, _, text) = server.call(Method::GET, path, "").await;
    (status, text)
}

#[tokio::test]
async fn a_function_reads_the_files_it_was_deployed_with_and_cannot_write_them() {
    let mut server = Server::start();
    let public = public();
    let out = server.cli(&[
        "deploy",
        &site_wasm(),
        "--name",
        "site",
        "--files",
        public.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        get(&server, "/fn/site/files/index.html").await,
        (StatusCode::OK, "<h1>hello</h1>".into())
    );
    assert_eq!(
        get(&server, "/fn/site/files/docs/a.txt").await,
        (StatusCode::OK, "a".into())
    );
    // Read-only: neither an existing file nor a new one can be written.
    for path in ["/fn/site/files/index.html", "/fn/site/files/new.txt"] {
        let (status, _, text) = server.call(Method::PUT, path, "x").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {text}");
        assert!(text.contains("cannot write"), "{text}");
    }
    // Only the bundle is there: nothing of the host's.
    let (status, text) = get(&server, "/fn/site/files/etc/passwd").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");

    // The version names its bundle, unpacked once on the node's disk.
    let (_, versions) = server.get_json("/v1/functions/site/versions").await;
    let digest = versions["versions"][0]["files"]
        .as_str()
        .expect("files digest")
        .to_string();
    let unpacked = server.data_dir().join("files").join(&digest);
    assert!(unpacked.join("docs/a.txt").is_file());

    // The same module without files sees none.
    let out = server.cli(&["deploy", &site_wasm(), "--name", "bare"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = get(&server, "/fn/bare/files/index.html").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, bare) = server.get_json("/v1/functions/bare/versions").await;
    assert_eq!(bare["versions"][0].get("files"), None, "{bare}");

    // A node that lost its unpacked copy unpacks it again from the store when it loads the version.
    std::fs::remove_dir_all(&unpacked).expect("remove the unpacked files");
    server = server.restart();
    assert_eq!(
        get(&server, "/fn/site/files/index.html").await,
        (StatusCode::OK, "<h1>hello</h1>".into())
    );
    let unpacked = server.data_dir().join("files").join(&digest);
    assert!(unpacked.is_dir());

    // Deleting the function removes its bundle; the module stays for `bare`.
    let out = server.cli(&["rm", "site"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!unpacked.exists());
    assert_eq!(get(&server, "/fn/bare/?name=x").await.0, StatusCode::OK);
}

/// A tar with one symbolic link.
fn tar_with_link() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    tar.append_link(&mut header, "passwd", "/etc/passwd")
        .expect("append link");
    tar.into_inner().expect("tar")
}

async fn deploy_with_files(
    server: &Server,
    name: &str,
    module_part: &str,
    module: Vec<u8>,
    files: Vec<u8>,
) -> (StatusCode, Value) {
    let form = Form::new()
        .part(module_part.to_string(), Part::bytes(module))
        .part("files", Part::bytes(files));
    let response = server
        .request(Method::POST, &format!("/v1/functions/{name}/versions"))
        .multipart(form)
        .send()
        .await
        .expect("deploy");
    let status = response.status();
    (status, response.json().await.expect("json"))
}

#[tokio::test]
async fn a_bad_bundle_is_refused_with_a_clear_error_and_nothing_is_stored() {
    let server = Server::start();
    let module = example("wagi-c/hello.wasm");
    for (files, says) in [
        (
            tar_with_link(),
            "`passwd` in the files bundle is a symbolic link",
        ),
        (b"not a tar".repeat(100), "not a valid tar archive"),
    ] {
        let (status, body) = deploy_with_files(&server, "f", "module", module.clone(), files).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}");
    }
    // A container brings its files in its image.
    let (status, body) =
        deploy_with_files(&server, "f", "image", b"not an image".to_vec(), Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("files are for wasm functions"),
        "{body}"
    );
    let (status, _) = server.get_json("/v1/functions/f").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unpacked = std::fs::read_dir(server.data_dir().join("files"))
        .expect("files dir")
        .count();
    assert_eq!(unpacked, 0, "nothing was unpacked");
}
