//! Job containers under a real containerd and runc: a busybox image imported through the content
//! store, each run a fresh container that is gone afterwards, held by the kernel to its limits and cut
//! off from every network.

use std::time::Duration;
use wafer_container::cgroup::Cgroups;
use wafer_container::containerd::{Containerd, Image, NAMESPACE};
use wafer_container::job::{self, Ended, Job, Template};
use wafer_container::spec::{Limits, Process, NOBODY};
use wafer_container::tarball;
use wafer_container::testing::{busybox_layout, TestContainerd};

struct Setup {
    daemon: TestContainerd,
    containerd: Containerd,
    cgroups: Cgroups,
    image: Image,
}

async fn setup() -> Option<Setup> {
    let daemon = TestContainerd::start(|_, _| {})?;
    let containerd = Containerd::connect(&daemon.socket())
        .await
        .expect("connect");
    let unpacked = tarball::read(&busybox_layout("busybox:test")).expect("the image");
    let image = containerd.import(&unpacked).await.expect("import");
    // Importing it again finds everything there.
    assert_eq!(containerd.import(&unpacked).await.expect("again"), image);
    let cgroups = Cgroups::detect().expect("cgroups");
    Some(Setup {
        daemon,
        containerd,
        cgroups,
        image,
    })
}

/// A job and the template of its container.
struct Case {
    template: Template,
    job: Job,
}

fn job(id: &str, script: &str) -> Case {
    Case {
        template: Template {
            function: id.to_string(),
            node: "test".into(),
            process: Process {
                args: vec!["/bin/sh".into(), "-c".into(), script.into()],
                env: vec!["PATH=/bin".into(), "GREETING=hej".into()],
                cwd: "/".into(),
                user: NOBODY,
                entry: None,
            },
            limits: Limits {
                memory: 64 << 20,
                cpu_millis: Some(500),
                pids: 32,
                tmp: 8 << 20,
            },
            output_cap: 1 << 20,
        },
        job: Job {
            id: format!("{id}-{}", std::process::id()),
            stdin: Vec::new(),
            timeout: Duration::from_secs(20),
        },
    }
}

impl Setup {
    async fn run(&self, case: &Case) -> Ended {
        let ended = job::run(
            &self.containerd,
            &self.cgroups,
            self.daemon.dir(),
            &self.image,
            &case.template,
            case.job.clone(),
        )
        .await
        .expect("run");
        self.check_gone(&case.job.id);
        println!(
            "{}: exit {} in {:?}, stdout {:?}, stderr {:?}",
            case.template.function,
            ended.exit_status,
            ended.usage,
            String::from_utf8_lossy(&ended.stdout[..ended.stdout.len().min(200)]),
            String::from_utf8_lossy(&ended.stderr[..ended.stderr.len().min(200)])
        );
        ended
    }

    /// A container of `template` with id `id`, created and not started.
    async fn create(&self, template: &Template, id: String) -> job::Created {
        job::create(
            &self.containerd,
            self.daemon.dir(),
            &self.image,
            template,
            id,
        )
        .await
        .expect("create")
    }

    /// Checks that nothing of container `id` is left.
    fn check_gone(&self, id: &str) {
        let containers = self.daemon.ctr(NAMESPACE, &["containers", "ls", "--quiet"]);
        assert_eq!(String::from_utf8_lossy(&containers.stdout).trim(), "");
        let snapshots = self.daemon.ctr(NAMESPACE, &["snapshots", "ls"]);
        assert!(!String::from_utf8_lossy(&snapshots.stdout).contains(id));
    }
}

#[tokio::test]
async fn job_containers_run_as_the_kernel_allows_and_leave_nothing_behind() {
    let Some(setup) = setup().await else {
        return;
    };

    // stdin, env and the user: an unprivileged process reading its request.
    let mut echo = job(
        "echo",
        "cat; echo; echo \"$GREETING\"; id -u; echo x > /tmp/w && cat /tmp/w",
    );
    echo.job.stdin = b"hello from stdin".to_vec();
    let ended = setup.run(&echo).await;
    assert_eq!(ended.exit_status, 0);
    assert_eq!(
        String::from_utf8_lossy(&ended.stdout),
        "hello from stdin\nhej\n65534\nx\n"
    );
    assert!(ended.usage.peak_memory.is_some_and(|peak| peak > 0));

    // The root file system is read-only.
    let ended = setup.run(&job("readonly", "echo x > /bin/x")).await;
    assert_ne!(ended.exit_status, 0);
    assert!(String::from_utf8_lossy(&ended.stderr).contains("Read-only"));

    // Exit codes come through.
    assert_eq!(setup.run(&job("exit", "exit 3")).await.exit_status, 3);

    // Over its memory limit, the kernel kills it.
    let mut hog = job("oom", "dd if=/dev/zero of=/dev/null bs=96M count=1");
    hog.template.limits.memory = 32 << 20;
    let ended = setup.run(&hog).await;
    assert!(ended.out_of_memory(), "{:?}", ended.usage);
    assert_eq!(ended.exit_status, 137);

    // Past its timeout, it is killed.
    let mut sleeper = job("sleep", "sleep 60");
    sleeper.job.timeout = Duration::from_secs(1);
    let ended = setup.run(&sleeper).await;
    assert!(ended.timed_out);
    assert_eq!(ended.exit_status, 137);

    // Output past the cap is dropped, and the process is not held up by it.
    let mut chatty = job("chatty", "head -c 3000000 /dev/zero");
    chatty.template.output_cap = 1000;
    let ended = setup.run(&chatty).await;
    assert_eq!(ended.exit_status, 0);
    assert_eq!((ended.stdout.len(), ended.stdout_truncated), (1000, true));

    // No network: the host's loopback, where wafer listens, is out of reach — though the same probe
    // reaches it from the host.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("addr").port();
    // It takes each connection and closes it, so a probe that gets through ends.
    std::thread::spawn(move || for _ in listener.incoming() {});
    let probe = format!("echo hi | nc 127.0.0.1 {port} && echo reached");
    let from_host = std::process::Command::new("/bin/busybox")
        .args(["sh", "-c", &probe])
        .output()
        .expect("probe from the host");
    assert!(String::from_utf8_lossy(&from_host.stdout).contains("reached"));
    let ended = setup.run(&job("net", &probe)).await;
    assert_ne!(ended.exit_status, 0);
    assert!(!String::from_utf8_lossy(&ended.stdout).contains("reached"));
    // Its 127.0.0.1 is its own loopback, where nothing listens.
    assert!(String::from_utf8_lossy(&ended.stderr).contains("can't connect"));
}

#[tokio::test]
async fn a_warm_container_gets_the_request_through_the_entry_program() {
    let Some(setup) = setup().await else {
        return;
    };
    let entry = wafer_container::entry::install(&setup.daemon.dir().join("entry")).expect("entry");
    let mut case = job(
        "warm",
        "echo \"$REQUEST_METHOD $GREETING $QUERY_STRING\"; cat",
    );
    case.template.process.entry = Some(entry);
    // Created first, as the warm pool keeps it, and only then given its request.
    let created = setup.create(&case.template, case.job.id.clone()).await;
    assert!(created.pid() > 0);
    let mut stdin =
        wafer_container::entry::frame([("REQUEST_METHOD", "PUT"), ("QUERY_STRING", "q=1")])
            .expect("frame");
    stdin.extend_from_slice(b"the body");
    let ended = created
        .run(&setup.cgroups, stdin, Duration::from_secs(20))
        .await
        .expect("run");
    assert_eq!(
        ended.exit_status,
        0,
        "{:?}",
        String::from_utf8_lossy(&ended.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ended.stdout),
        "PUT hej q=1\nthe body"
    );
    setup.check_gone(&case.job.id);

    // One discarded without running leaves nothing either.
    let created = setup
        .create(&case.template, format!("discarded-{}", std::process::id()))
        .await;
    created.discard().await;
    setup.check_gone("discarded");
}

#[tokio::test]
async fn what_a_crashed_node_left_behind_is_removed_and_no_other_nodes() {
    let Some(setup) = setup().await else {
        return;
    };
    let mut case = job("left", "sleep 60");
    let mine = setup.create(&case.template, case.job.id.clone()).await;
    case.template.node = "other".into();
    let theirs = setup
        .create(&case.template, format!("theirs-{}", std::process::id()))
        .await;
    // As if the node had crashed: nothing removes them.
    std::mem::forget(mine);
    let removed = job::remove_leftovers(&setup.containerd, "test")
        .await
        .expect("leftovers");
    assert_eq!(removed, 1);
    let containers = setup
        .daemon
        .ctr(NAMESPACE, &["containers", "ls", "--quiet"]);
    let listed = String::from_utf8_lossy(&containers.stdout).to_string();
    assert!(
        listed.contains("theirs") && !listed.contains("left"),
        "{listed}"
    );
    theirs.discard().await;
    setup.check_gone(&case.job.id);
}
