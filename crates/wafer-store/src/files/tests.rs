use super::*;

/// A tar of `entries`: (path, Some(contents)) for a file, (path, None) for a directory.
fn bundle(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        match contents {
            Some(bytes) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                tar.append_data(&mut header, path, *bytes).unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                tar.append_data(&mut header, path, &[][..]).unwrap();
            }
        }
    }
    tar.into_inner().unwrap()
}

/// A tar whose one entry has `path` written into its header as is (the builder refuses `..`).
fn raw_entry(path: &str, kind: tar::EntryType) -> Vec<u8> {
    let mut header = tar::Header::new_old();
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_entry_type(kind);
    header.set_size(0);
    header.set_mode(0o644);
    if kind == tar::EntryType::Symlink {
        header.set_link_name("/etc/passwd").unwrap();
    }
    header.set_cksum();
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend_from_slice(&[0; 1024]);
    bytes
}

#[test]
fn a_bundle_of_files_and_directories_is_counted_and_unpacked_read_only() {
    let tar = bundle(&[
        ("static", None),
        ("static/index.html", Some(b"<h1>hi</h1>")),
        ("./data/deep/rows.csv", Some(b"a,b\n1,2\n")),
    ]);
    assert_eq!(
        check(&tar).unwrap(),
        Summary {
            files: 2,
            bytes: 19
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Unpacked::open(dir.path()).unwrap();
    let digest = wafer_api::oci::sha256_hex(&tar);
    assert!(!unpacked.contains(&digest));
    let root = unpacked.unpack(&digest, &tar).unwrap();
    assert!(unpacked.contains(&digest));
    assert_eq!(
        fs::read(root.join("static/index.html")).unwrap(),
        b"<h1>hi</h1>"
    );
    assert_eq!(
        fs::read(root.join("data/deep/rows.csv")).unwrap(),
        b"a,b\n1,2\n"
    );
    let mode = fs::metadata(root.join("static/index.html"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o222, 0, "files are unpacked read-only");
    // Unpacking again keeps the first copy; nothing temporary is left beside it.
    assert_eq!(unpacked.unpack(&digest, &tar).unwrap(), root);
    let names: Vec<_> = fs::read_dir(dir.path().join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(&digest)]);
    unpacked.remove(&digest).unwrap();
    assert!(!unpacked.contains(&digest));
    unpacked.remove(&digest).unwrap();
}

#[test]
fn paths_out_of_the_bundle_links_and_devices_are_refused_and_nothing_is_unpacked() {
    let cases = [
        (
            raw_entry("../escape", tar::EntryType::Regular),
            "not a relative path",
        ),
        (
            raw_entry("/etc/cron.d/x", tar::EntryType::Regular),
            "not a relative path",
        ),
        (
            raw_entry("a/../../b", tar::EntryType::Regular),
            "not a relative path",
        ),
        (raw_entry("link", tar::EntryType::Symlink), "symbolic link"),
        (raw_entry("hard", tar::EntryType::Link), "hard link"),
        (raw_entry("dev", tar::EntryType::Char), "device"),
        (raw_entry("pipe", tar::EntryType::Fifo), "named pipe"),
        (
            bundle(&[("twice", Some(b"1")), ("./twice", Some(b"2"))]),
            "twice",
        ),
        (
            b"this is no tar archive at all".repeat(40),
            "not a valid tar",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Unpacked::open(dir.path()).unwrap();
    for (tar, expected) in cases {
        let error = check(&tar).unwrap_err();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
        let digest = wafer_api::oci::sha256_hex(&tar);
        assert!(unpacked.unpack(&digest, &tar).is_err());
        assert!(!unpacked.contains(&digest));
    }
    assert_eq!(fs::read_dir(dir.path().join("files")).unwrap().count(), 0);
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn a_bundle_past_the_entry_limit_is_refused() {
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|n| format!("d{n}")).collect();
    let entries: Vec<(&str, Option<&[u8]>)> = names.iter().map(|n| (n.as_str(), None)).collect();
    let error = check(&bundle(&entries)).unwrap_err();
    assert!(error.contains("more than"), "{error}");
}

#[test]
fn a_digest_that_is_not_hex_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let unpacked = Unpacked::open(dir.path()).unwrap();
    assert!(unpacked.path("../../etc").is_err());
    assert!(unpacked.unpack("", b"").is_err());
}
