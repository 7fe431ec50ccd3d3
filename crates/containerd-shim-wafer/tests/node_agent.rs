//! The shim in agent mode under a real containerd: pods become functions in one `wafer node` process,
//! each listening inside its own network namespace; and the same pods in per-process mode, for
//! comparison.
//!
//! `WAFER_TEST_PODS` sets how many http containers each test runs (50 unless it says otherwise).

mod common;

use common::*;
use std::time::{Duration, Instant};

/// How many http containers a test runs.
fn pods() -> usize {
    std::env::var("WAFER_TEST_PODS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50)
}

const LISTEN: &str = "WAFER_LISTEN=127.0.0.1:8080";

/// The images the tests run: a WAGI greeter, a hostile WAGI guest (1 s timeout, 32 MiB) and a command.
fn images(containerd: &Containerd, dir: &std::path::Path) {
    let hello = package(dir, "examples/wagi-c/hello.wasm", "hello", &[]);
    let hostile = package(
        dir,
        "crates/wafer/tests/fixtures/hostile.wasm",
        "hostile",
        &["--kind", "wagi", "--timeout", "1s", "--memory", "32MiB"],
    );
    let greet = package(
        dir,
        "examples/command-c/greet.wasm",
        "greet",
        &["--kind", "command", "--env", "GREETING=Hi"],
    );
    for tarball in [&hello, &hostile, &greet] {
        containerd.import(tarball);
    }
}

/// Runs `count` http containers `web0`… of the hello image, each in a new network namespace named
/// with `prefix`, and waits until each answers inside its namespace; prints how long that took.
fn start_pods(containerd: &Containerd, prefix: &str, count: usize, mode: &str) -> Vec<Netns> {
    let namespaces: Vec<Netns> = (0..count)
        .map(|i| Netns::add(&unique(&format!("{prefix}{i}"))))
        .collect();
    let started = Instant::now();
    for (i, netns) in namespaces.iter().enumerate() {
        let id = format!("web{i}");
        containerd.run_detached(&id, &image("hello"), Some(netns), &["--env", LISTEN]);
    }
    for (i, netns) in namespaces.iter().enumerate() {
        let (status, body) = netns.wait_for(8080, &format!("/?name=pod{i}"));
        assert!(status.contains("200"), "pod {i}: {status} {body}");
        assert!(
            body.starts_with(&format!("Hello, pod{i}!\n")),
            "pod {i}: {body}"
        );
    }
    println!(
        "{count} http containers started and answered in {} ms{mode}",
        started.elapsed().as_millis()
    );
    namespaces
}

/// A containerd whose shims hand their containers to an agent, the agent, and the directory of its
/// socket and cache; `None` (a failure in CI) without containerd.
fn agent_node() -> Option<(Containerd, Agent, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("node.sock");
    let containerd = Containerd::start_with(&[("WAFER_NODE_AGENT", &socket)])?;
    let agent = Agent::start(dir.path());
    Some((containerd, agent, dir))
}

#[test]
fn pods_become_functions_in_one_agent_each_in_its_own_network() {
    let Some((containerd, agent, _dir)) = agent_node() else {
        return;
    };
    let tarballs = tempfile::tempdir().expect("temp dir");
    images(&containerd, tarballs.path());

    // Many http containers, each in a network namespace of its own, all served by the one agent.
    let count = pods();
    let namespaces = start_pods(&containerd, "a", count, "");
    let shim = containerd.task_pid("web0").expect("web0's pid");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert!(
        comm.starts_with("containerd-shim"),
        "the task is its shim, not a process: {comm}"
    );
    assert_ne!(shim, agent.pid());
    for i in 0..count {
        assert_eq!(
            agent.lines_with(&["loaded", &format!("container=web{i} "), "kind=wagi"]),
            1,
            "web{i} is loaded in the agent:\n{}",
            agent.log()
        );
    }
    // One module, compiled once for all of them.
    assert_eq!(
        agent.lines_with(&["module ready", "origin=Compiled"]),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(agent.artifacts().len(), 1, "{:?}", agent.artifacts());
    assert!(agent.cache_holds("compile-cache.db"));
    // The function listens in its namespace only: the host's loopback does not reach it.
    if let Ok((_, body)) = get(8080, "/?name=host") {
        assert!(!body.contains("Hello, host"), "served on the host: {body}");
    }

    // A hostile pod traps, spins and bombs its memory; only its own requests fail.
    let hostile = Netns::add(&unique("hostile"));
    containerd.run_detached(
        "hostile",
        &image("hostile"),
        Some(&hostile),
        &["--env", LISTEN],
    );
    assert_eq!(hostile.wait_for(8080, "/").1, "calm\n");
    let spinning = std::thread::spawn({
        let path = hostile.path();
        move || get_inside(&path, 8080, "/spin")
    });
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = namespaces[1]
        .get(8080, "/?name=beside")
        .expect("beside a spinning guest");
    assert!(
        status.contains("200") && body.starts_with("Hello, beside!"),
        "{status} {body}"
    );
    let (status, body) = spinning.join().expect("spin").expect("an answer");
    assert!(
        status.contains("504") && body.contains("timeout"),
        "{status} {body}"
    );
    let (status, body) = hostile.get(8080, "/abort").expect("abort");
    assert!(
        status.contains("500") && body.contains("trap"),
        "{status} {body}"
    );
    let (status, body) = hostile.get(8080, "/malloc").expect("malloc");
    assert!(status.contains("500"), "{status} {body}");
    assert_eq!(hostile.get(8080, "/").expect("still serving").1, "calm\n");
    for (i, netns) in namespaces.iter().enumerate().take(3) {
        let (status, _) = netns.get(8080, "/?name=after").expect("still serving");
        assert!(
            status.contains("200"),
            "pod {i} after the hostile guest: {status}"
        );
    }

    // Killing a container unloads its function: SIGTERM stops it cleanly (exit 0), SIGKILL at once.
    for (id, signal) in [("web0", "SIGTERM"), ("web1", "SIGKILL")] {
        let killed = containerd.ctr(&["tasks", "kill", "--signal", signal, id]);
        assert!(killed.status.success(), "{}", text(&killed));
        containerd.wait_stopped(id);
        containerd.remove(id);
    }
    assert!(namespaces[0].get(8080, "/").is_err(), "web0 still answers");
    assert!(namespaces[1].get(8080, "/").is_err(), "web1 still answers");
    assert_eq!(
        agent.lines_with(&["exited", "container=web0 ", "code=0"]),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(
        agent.lines_with(&["exited", "container=web1 ", "code=137"]),
        1,
        "{}",
        agent.log()
    );
    let (status, _) = namespaces[2].get(8080, "/").expect("the others serve on");
    assert!(status.contains("200"));

    // A command container runs to completion in the agent: its output and exit code come back
    // through ctr.
    let (output, _) =
        containerd.run_to_end(&image("greet"), "job1", &["/app.wasm", "agent", "node"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "Hi, agent!\nHi, node!\n"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("greeted 2"),
        "{}",
        text(&output)
    );
    let (output, _) = containerd.run_to_end(&image("greet"), "job2", &[]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("usage"),
        "{}",
        text(&output)
    );
    assert_eq!(
        agent.lines_with(&["loaded", "container=job1 ", "kind=command"]),
        1
    );

    // A pod's sandbox (its pause container, as CRI annotates it) runs nothing, in the agent or out
    // of it, and stops when killed.
    containerd.run_detached(
        "sandbox",
        &image("hello"),
        None,
        &["--annotation", "io.kubernetes.cri.container-type=sandbox"],
    );
    assert_eq!(
        containerd.task_status("sandbox").as_deref(),
        Some("RUNNING")
    );
    assert_eq!(
        agent.lines_with(&["container=sandbox "]),
        0,
        "{}",
        agent.log()
    );
    let killed = containerd.ctr(&["tasks", "kill", "sandbox"]);
    assert!(killed.status.success(), "{}", text(&killed));
    containerd.wait_stopped("sandbox");
    containerd.remove("sandbox");

    // A container naming no wasm, or a file that is not wasm, fails at create with the reason; the
    // agent serves on.
    for (id, entry, reason) in [
        (
            "bad1",
            "/missing.wasm",
            "not in the container's root filesystem",
        ),
        ("bad2", "/wafer.json", "not a valid WebAssembly binary"),
    ] {
        let (output, _) = containerd.run_to_end(&image("hello"), id, &[entry]);
        assert!(!output.status.success(), "{}", text(&output));
        assert!(text(&output).contains(reason), "{id}: {}", text(&output));
        let _ = containerd.ctr(&["containers", "rm", id]);
    }
    let (status, _) = namespaces[3].get(8080, "/").expect("the others serve on");
    assert!(status.contains("200"));
    assert_eq!(
        agent.lines_with(&["module ready", "origin=Compiled"]),
        3,
        "one compile per distinct module: {}",
        agent.log()
    );
}

#[test]
fn without_an_agent_the_shim_runs_each_function_in_its_own_process() {
    // An agent is named but nothing listens there: the shim says so and runs functions itself.
    let nowhere = tempfile::tempdir().expect("temp dir");
    let socket = nowhere.path().join("node.sock");
    let Some(containerd) = Containerd::start_with(&[("WAFER_NODE_AGENT", &socket)]) else {
        return;
    };
    let tarballs = tempfile::tempdir().expect("temp dir");
    images(&containerd, tarballs.path());
    let namespaces = start_pods(&containerd, "p", pods(), " (per process)");
    assert!(
        containerd.log().contains("unreachable")
            && containerd.log().contains("their own processes"),
        "{}",
        containerd.log()
    );
    // Each function is a process of its own, inside its pod's namespace.
    let pid = containerd.task_pid("web0").expect("web0's pid");
    let inode =
        |path: &str| std::fs::metadata(path).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    assert_eq!(
        inode(&format!("/proc/{pid}/ns/net")).expect("the task's namespace"),
        inode(&namespaces[0].path().to_string_lossy()).expect("the pod's namespace"),
    );
}

#[test]
fn a_lost_agent_ends_its_tasks_and_a_new_one_takes_new_containers() {
    let Some((containerd, mut agent, agent_dir)) = agent_node() else {
        return;
    };
    let tarballs = tempfile::tempdir().expect("temp dir");
    images(&containerd, tarballs.path());
    let netns = Netns::add(&unique("lost"));
    let with_ns = format!("network:{}", netns.path().display());
    let args = [
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &with_ns,
        "--env",
        LISTEN,
        &image("hello"),
        "web",
    ];
    let serving = containerd
        .command(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ctr run");
    let (status, body) = netns.wait_for(8080, "/?name=before");
    assert!(
        status.contains("200") && body.starts_with("Hello, before!"),
        "{body}"
    );
    assert_eq!(
        agent.lines_with(&["loaded", "container=web "]),
        1,
        "{}",
        agent.log()
    );

    // The agent dies: its task ends with 255, and the container's stderr says why.
    agent.crash();
    let mut serving = serving;
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving.try_wait().expect("ctr").is_none() {
        assert!(Instant::now() < deadline, "the task outlived its agent");
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = serving.wait_with_output().expect("ctr output");
    assert_eq!(output.status.code(), Some(255), "{}", text(&output));
    assert!(
        text(&output).contains("the node agent went away"),
        "{}",
        text(&output)
    );
    assert!(
        netns.get(8080, "/").is_err(),
        "nothing serves after the agent died"
    );

    // A new agent on the same node takes new containers, loading the module it compiled before.
    let agent = Agent::start(agent_dir.path());
    let (output, _) = containerd.run_to_end(&image("greet"), "job", &["/app.wasm", "again"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "Hi, again!\n");
    containerd.run_detached("web2", &image("hello"), Some(&netns), &["--env", LISTEN]);
    assert!(netns
        .wait_for(8080, "/?name=back")
        .1
        .starts_with("Hello, back!"));
    assert!(
        agent.lines_with(&["module ready", "origin=Loaded"]) >= 1,
        "the artifact from before the crash: {}",
        agent.log()
    );
}

#[test]
fn a_wasm_artifact_runs_from_its_image_layer() {
    let Some((containerd, agent, _dir)) = agent_node() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let hello = package(dir.path(), "examples/wagi-c/hello.wasm", "hello", &[]);
    // Every platform's content, as a node pulls it when its runtime takes wasm images.
    let imported = containerd.ctr(&[
        "images",
        "import",
        "--all-platforms",
        &hello.to_string_lossy(),
    ]);
    assert!(imported.status.success(), "{}", text(&imported));
    let artifact = artifact_only(&hello, dir.path(), &image("hello-artifact"));
    containerd.import_artifact(&artifact);
    let empty = empty_rootfs(dir.path());
    let netns = Netns::add(&unique("artifact"));
    let with_ns = format!("network:{}", netns.path().display());
    let create = |id: &str| {
        let created = containerd.ctr(&[
            "containers",
            "create",
            "--runtime",
            RUNTIME,
            "--with-ns",
            &with_ns,
            "--env",
            LISTEN,
            "--rootfs",
            &empty.to_string_lossy(),
            id,
            "/app.wasm",
        ]);
        assert!(created.status.success(), "{}", text(&created));
    };

    // A container of the artifact has an empty root filesystem: its function is the image's layer,
    // and its config (kind wagi) the manifest's annotation.
    create("art");
    containerd
        .daemon
        .set_image(NAMESPACE, "art", &image("hello-artifact"));
    let started = containerd.ctr(&["tasks", "start", "--detach", "art"]);
    assert!(started.status.success(), "{}", text(&started));
    let (status, body) = netns.wait_for(8080, "/?name=layer");
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.starts_with("Hello, layer!\n"), "{body}");
    let killed = containerd.ctr(&["tasks", "kill", "art"]);
    assert!(killed.status.success(), "{}", text(&killed));
    containerd.wait_stopped("art");
    containerd.ctr(&["tasks", "rm", "art"]);

    // An index whose plain image lacks the file the container names: its wasm manifest's layer.
    let other = Netns::add(&unique("index"));
    let other_ns = format!("network:{}", other.path().display());
    let hello_image = image("hello");
    let run = containerd.ctr(&[
        "run",
        "--detach",
        "--runtime",
        RUNTIME,
        "--with-ns",
        &other_ns,
        "--env",
        LISTEN,
        &hello_image,
        "idx",
        "/elsewhere.wasm",
    ]);
    assert!(run.status.success(), "{}", text(&run));
    let (status, body) = other.wait_for(8080, "/?name=index");
    assert!(
        status.contains("200") && body.starts_with("Hello, index!"),
        "{body}"
    );

    // Neither a file nor a layer: Create fails and says why.
    create("none");
    let started = containerd.ctr(&["tasks", "start", "--detach", "none"]);
    assert!(!started.status.success());
    assert!(
        text(&started).contains("its image has no wasm layer"),
        "{}",
        text(&started)
    );
    assert_eq!(
        agent.lines_with(&["loaded", "container=art ", "kind=wagi"]),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(
        agent.lines_with(&["module ready", "origin=Compiled"]),
        1,
        "one compile for both, as they are one module: {}",
        agent.log()
    );
}
